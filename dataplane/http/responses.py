"""Answers the data plane writes itself: local routes and errors in the client's API format.

Error shapes come from ``shared.wire``; the Ollama version we claim is defined here, once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import msgspec

from shared.errors import OllamaFlowError
from shared.snapshot import ApiFormat
from shared.wire import ollama, openai

__all__ = [
    "OLLAMA_VERSION",
    "Send",
    "error_bytes",
    "send_bytes",
    "send_error",
    "send_failure",
    "send_json",
    "whole_answer",
]

# The Ollama API version the data plane answers /api/version with (clients gate features on it).
OLLAMA_VERSION = "0.33.0"

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

JSON = b"application/json; charset=utf-8"
TEXT = b"text/plain; charset=utf-8"

_encoder = msgspec.json.Encoder()


def error_bytes(api_format: ApiFormat, status: int, message: str) -> bytes:
    if api_format == "OpenAI":
        return openai.error_body(message, status)
    return ollama.error_body(message)


async def send_bytes(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """A complete response in two ASGI messages. The server drops the body of a HEAD answer."""
    start, end = whole_answer(status, body, content_type, headers)
    await send(start)
    await send(end)


def whole_answer(
    status: int, body: bytes, content_type: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The two ASGI messages of a complete response."""
    all_headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if headers:
        all_headers.extend(headers)
    return {"type": "http.response.start", "status": status, "headers": all_headers}, {
        "type": "http.response.body",
        "body": body,
    }


async def send_json(
    send: Send, status: int, payload: object, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send_bytes(send, status, _encoder.encode(payload), JSON, headers)


async def send_failure(
    send: Send, api_format: ApiFormat, exc: OllamaFlowError, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """``exc`` as the client's error answer, with the headers it brings (``OllamaFlowError.headers``)."""
    await send_error(send, api_format, exc.status, exc.message, [*(headers or ()), *exc.headers])


async def send_error(
    send: Send,
    api_format: ApiFormat,
    status: int,
    message: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    await send_bytes(send, status, error_bytes(api_format, status, message), JSON, headers)
