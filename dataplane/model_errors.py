"""The errors a model-aware pick raises when no backend can take the requested model.

Pure: each renders itself in the client's API format (Ollama's or OpenAI's own shape and status).
"""

from __future__ import annotations

from shared.errors import OllamaFlowError
from shared.snapshot import ApiFormat
from shared.wire import ollama, openai

__all__ = ["PULL_RETRY_AFTER", "ModelNotFound", "ModelPulling", "ModelUnavailable"]

# Seconds a client is told to wait while a required model is being pulled.
PULL_RETRY_AFTER = 10


class ModelUnavailable(OllamaFlowError):
    """No eligible backend has the requested model; rendered in the client's own error shape."""

    def __init__(self, model: str, message: str) -> None:
        super().__init__(message)
        self.model = model

    def body(self, api_format: ApiFormat) -> bytes:
        if api_format == "OpenAI":
            return openai.error_body(self.message, self.status, code="model_not_found", param="model")
        return ollama.error_body(self.message)

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return []


class ModelNotFound(ModelUnavailable):
    """Ollama's and OpenAI's own 404 (the ollama CLI pulls the model when it sees this one)."""

    status = 404

    def __init__(self, model: str) -> None:
        super().__init__(model, f"model '{model}' not found")

    def body(self, api_format: ApiFormat) -> bytes:
        if api_format == "OpenAI":
            # OpenAI types this 404 as an invalid request (the type a 400 gets), not "not_found_error".
            message = f"The model `{self.model}` does not exist."
            return openai.error_body(message, 400, code="model_not_found", param="model")
        return ollama.error_body(self.message)


class ModelPulling(ModelUnavailable):
    """The model is one the frontend requires: the control plane is pulling it, so come back later."""

    status = 503

    def __init__(self, model: str) -> None:
        super().__init__(model, f"model '{model}' is being pulled for this frontend; try again shortly")

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"retry-after", str(PULL_RETRY_AFTER).encode())]
