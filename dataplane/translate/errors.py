"""Errors in translation: what cannot be translated, and error bodies carried between the formats.

Ollama says ``{"error": "..."}``; OpenAI says ``{"error": {"message", "type", "param", "code"}}``.
The status code is kept both ways (OpenAI's 422 becomes a 400, which is what Ollama clients expect).
"""

from __future__ import annotations

from typing import Any

import msgspec

from dataplane.translate.framing import ndjson_line
from shared.errors import OllamaFlowError
from shared.wire import ollama as ollama_wire
from shared.wire import openai as openai_wire

__all__ = [
    "STREAM_ENDED",
    "Untranslatable",
    "error_message",
    "ollama_error_from_openai",
    "ollama_stream_error",
    "openai_error_from_ollama",
    "openai_stream_error",
    "unsupported_operation",
]

STREAM_ENDED = "backend stream ended unexpectedly"


class Untranslatable(OllamaFlowError):
    """A request (or part of one) the other format cannot express.

    ``status`` is 400 when the client can change the request, 501 when the operation does not exist
    on the backend's format. The route renders it with ``ollama_body`` or ``openai_body``.
    """

    def __init__(self, message: str, status: int = 400, *, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.param = param

    def ollama_body(self) -> bytes:
        return ollama_wire.error_body(self.message)

    def openai_body(self) -> bytes:
        return openai_wire.error_body(self.message, self.status, param=self.param)


def unsupported_operation(operation: str, backend: str) -> Untranslatable:
    """A 501 for an Ollama operation (push, create, copy, blobs, ...) an OpenAI backend lacks."""
    return Untranslatable(f"{operation} is not supported by OpenAI-compatible backend {backend}", 501)


def _message_of(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict):
        for key in ("error", "message", "detail"):
            found = _message_of(value.get(key))
            if found:
                return found
    return None


def error_message(status: int, body: bytes) -> str:
    """The message inside any dialect's error body (Ollama, OpenAI, vLLM, plain text)."""
    try:
        found = _message_of(msgspec.json.decode(body))
    except msgspec.DecodeError:
        found = body.decode("utf-8", errors="replace").strip() or None
    return found or f"backend answered with status {status}"


def ollama_error_from_openai(status: int, body: bytes) -> tuple[int, bytes]:
    """An OpenAI-format backend's error as Ollama's ``(status, {"error": ...})``."""
    return (400 if status == 422 else status), ollama_wire.error_body(error_message(status, body))


def openai_error_from_ollama(status: int, body: bytes) -> tuple[int, bytes]:
    """An Ollama backend's error as OpenAI's ``(status, {"error": {...}})``; unknown models get a code."""
    message = error_message(status, body)
    code = "model_not_found" if status == 404 and "not found" in message else None
    return status, openai_wire.error_body(message, status, code=code)


def ollama_stream_error(message: str) -> bytes:
    """The last line of a broken Ollama stream: ``{"error": ...}``."""
    return ndjson_line({"error": message})


def openai_stream_error(message: str) -> bytes:
    """The last event of a broken OpenAI stream; openai-python raises ``APIError`` on it."""
    return b"data: " + openai_wire.error_body(message, 500) + b"\n\n"
