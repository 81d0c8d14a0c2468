"""Ollama API wire types: only the fields OllamaFlow itself reads; everything else passes through."""

from __future__ import annotations

import msgspec

__all__ = ["ModelRequest", "error_body"]


class ModelRequest(msgspec.Struct, kw_only=True):
    """The fields of a generate/chat/embed/show/pull body that routing needs.

    Decoding into this skips every other field without building it, which keeps the hot path cheap.
    ``name`` is the legacy spelling of ``model`` on show/pull/delete.
    """

    model: str = ""
    name: str = ""
    stream: bool | None = None

    @property
    def model_name(self) -> str:
        return self.model or self.name


class ErrorBody(msgspec.Struct):
    error: str


_encoder = msgspec.json.Encoder()


def error_body(message: str) -> bytes:
    """Ollama's error shape: ``{"error": "..."}``."""
    return _encoder.encode(ErrorBody(error=message))
