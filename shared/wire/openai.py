"""OpenAI API wire types: only the fields OllamaFlow itself reads; everything else passes through."""

from __future__ import annotations

import msgspec

__all__ = ["error_body", "error_type_for_status"]


class ErrorDetail(msgspec.Struct, omit_defaults=False):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(msgspec.Struct):
    error: ErrorDetail


_encoder = msgspec.json.Encoder()


def error_type_for_status(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 404:
        return "not_found_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def error_body(message: str, status: int, *, code: str | None = None, param: str | None = None) -> bytes:
    """OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""
    detail = ErrorDetail(message=message, type=error_type_for_status(status), param=param, code=code)
    return _encoder.encode(ErrorBody(error=detail))
