"""The errors a pick raises when no backend can take the request: none has the requested model, or
none carries the requested ``X-OllamaFlow-Label``.

Pure: each renders itself in the client's API format (Ollama's or OpenAI's own shape and status).
"""

from __future__ import annotations

from shared.errors import OllamaFlowError
from shared.snapshot import ApiFormat
from shared.wire import ollama, openai

__all__ = [
    "LABEL_RETRY_AFTER",
    "PULL_RETRY_AFTER",
    "LabelUnavailable",
    "ModelNotFound",
    "ModelPulling",
    "ModelUnavailable",
    "UnknownLabel",
    "Unservable",
]

# Seconds a client is told to wait while a required model is being pulled.
PULL_RETRY_AFTER = 10
# ... and while no backend with the label it asked for can serve (health probes run every few s).
LABEL_RETRY_AFTER = 5


class Unservable(OllamaFlowError):
    """No eligible backend for this request; rendered in the client's own error shape."""

    code: str | None = None  # OpenAI's error code
    param: str | None = None  # ... and the parameter at fault

    def body(self, api_format: ApiFormat) -> bytes:
        if api_format == "OpenAI":
            return openai.error_body(self.message, self.status, code=self.code, param=self.param)
        return ollama.error_body(self.message)

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return []


class UnknownLabel(Unservable):
    """No backend of the frontend carries the label at all: a mistake of the client's."""

    status = 400
    code = "unknown_label"

    def __init__(self, label: str) -> None:
        super().__init__(f"no backend of this frontend carries label {label!r} (X-OllamaFlow-Label)")


class LabelUnavailable(Unservable):
    """Backends carry the label, but none of them can serve this request now (unhealthy, inactive,
    not taking this kind of request or without the model)."""

    status = 503
    code = "label_unavailable"

    def __init__(self, label: str) -> None:
        super().__init__(
            f"no backend with label {label!r} (X-OllamaFlow-Label) can serve this request now; "
            "try again shortly"
        )

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"retry-after", str(LABEL_RETRY_AFTER).encode())]


class ModelUnavailable(Unservable):
    """No eligible backend has the requested model."""

    code = "model_not_found"
    param = "model"

    def __init__(self, model: str, message: str) -> None:
        super().__init__(message)
        self.model = model


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
