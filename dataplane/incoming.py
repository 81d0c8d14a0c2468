"""Reading the client's request: the body within the frontend's size limit, and the fields we route by."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import msgspec

from shared.errors import OllamaFlowError
from shared.wire.ollama import ModelRequest

__all__ = ["BadRequest", "BodyTooLarge", "ClientGone", "Receive", "read_body", "read_model_request"]

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


class BadRequest(OllamaFlowError):
    status = 400


class BodyTooLarge(OllamaFlowError):
    status = 413


class ClientGone(Exception):
    """The client disconnected; there is nobody left to answer."""


def _too_large(limit: int) -> BodyTooLarge:
    return BodyTooLarge(f"request body exceeds this frontend's limit of {limit} bytes")


async def read_body(receive: Receive, declared_length: int | None, limit: int) -> bytes:
    """The whole request body; refuses a declared or actual size over ``limit`` without reading on."""
    if declared_length is not None and declared_length > limit:
        raise _too_large(limit)
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientGone
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):  # the usual case: one message holds it all
        if len(body) > limit:
            raise _too_large(limit)
        return body
    chunks = [body]
    size = len(body)
    while message.get("more_body", False):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


_decoder = msgspec.json.Decoder(ModelRequest)


def read_model_request(body: bytes) -> ModelRequest:
    """The routing fields of an Ollama request body; the body itself is forwarded untouched."""
    if not body.strip():
        raise BadRequest("missing request body")
    try:
        return _decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"invalid request body: {exc}") from exc
