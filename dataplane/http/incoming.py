"""Reading the client's request: the body within its size limit and in time, and the fields we route by.

Two limits bound a body: the frontend's MaxRequestBodySize for every body, and for JSON bodies (all but
blob uploads) also the data plane's ``max_json`` (OLLAMAFLOW_MAX_JSON_BODY), since a JSON body is held
whole and decoded. A client that stops sending its body gets a 408 once no piece has come for
``piece_timeout``; the answer closes the connection.
"""

from __future__ import annotations

import asyncio
import io
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import msgspec

from dataplane.http.request_context import running_task
from shared.errors import OllamaFlowError
from shared.wire.ollama import ModelRequest

__all__ = [
    "CLOSE",
    "BadRequest",
    "BodyLimit",
    "BodyReader",
    "BodyTimeout",
    "BodyTooLarge",
    "ClientGone",
    "Receive",
    "frontend_limit",
    "read_model_request",
]

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]

CLOSE = (b"connection", b"close")


class BadRequest(OllamaFlowError):
    status = 400


class BodyTooLarge(OllamaFlowError):
    status = 413


class BodyTimeout(OllamaFlowError):
    """The client stopped sending its body; the answer ends the connection."""

    status = 408
    headers = (CLOSE,)


class ClientGone(Exception):
    """The client disconnected; there is nobody left to answer."""


class BodyLimit:
    """A size limit, and the refusal that tells the client which setting sets it."""

    __slots__ = ("_words", "size")

    def __init__(self, size: int, words: str) -> None:
        self.size = size
        self._words = words  # "{}" stands for the size

    def refusal(self) -> BodyTooLarge:
        return BodyTooLarge("request body exceeds " + self._words.format(self.size))


def frontend_limit(size: int) -> BodyLimit:
    return BodyLimit(size, "this frontend's limit of {} bytes (its MaxRequestBodySize)")


class _PieceDeadlines:
    """Cancels a task whose wait for the next piece of its body passed ``timeout``.

    One timer ticking a few times per timeout serves every request (a timer per request cost about
    5 us of the data plane's ~200 us per request); a waiting task costs a dict entry.
    """

    __slots__ = ("_tick", "_timeout", "_timer", "_waiting")

    _EXPIRED = -1.0

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._tick = min(1.0, timeout / 4)
        self._waiting: dict[asyncio.Task[Any], float] = {}
        self._timer: asyncio.TimerHandle | None = None

    async def receive(self, receive: Receive) -> MutableMapping[str, Any]:
        task = running_task()
        loop = task.get_loop()
        self._waiting[task] = loop.time() + self._timeout
        if self._timer is None:
            self._timer = loop.call_later(self._tick, self._check, loop)
        try:
            return await receive()
        except asyncio.CancelledError:
            if self._waiting.get(task) != self._EXPIRED or task.uncancel() > 0:
                raise
            raise BodyTimeout(f"request body incomplete: nothing received for {self._timeout:g} s") from None
        finally:
            del self._waiting[task]

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for task, deadline in self._waiting.items():
            if 0 <= deadline <= now:
                self._waiting[task] = self._EXPIRED
                task.cancel()
        self._timer = loop.call_later(self._tick, self._check, loop) if self._waiting else None


class BodyReader:
    """Reads request bodies for the handlers; refusals are counted by kind in ``errors``."""

    def __init__(
        self,
        *,
        max_json: int,
        piece_timeout: float,
        errors: Counter[str] | None = None,
    ) -> None:
        self._json_limit = BodyLimit(
            max_json, "the data plane's limit of {} bytes for JSON bodies (OLLAMAFLOW_MAX_JSON_BODY)"
        )
        self._deadlines = _PieceDeadlines(piece_timeout)
        self._errors: Counter[str] = Counter() if errors is None else errors

    def json_limit(self, frontend_max: int) -> BodyLimit:
        """The tighter of the frontend's MaxRequestBodySize and the data plane's JSON cap."""
        return self._json_limit if self._json_limit.size < frontend_max else frontend_limit(frontend_max)

    async def json(self, receive: Receive, declared_length: int | None, frontend_max: int) -> bytes:
        """A whole JSON body, within ``json_limit``."""
        return await self.whole(receive, declared_length, self.json_limit(frontend_max))

    async def whole(self, receive: Receive, declared_length: int | None, limit: BodyLimit) -> bytes:
        """The whole body; refuses a declared or actual size over ``limit`` without reading on."""
        try:
            return await self._whole(receive, declared_length, limit)
        except BodyTooLarge:
            self._errors["body_too_large"] += 1
            raise
        except BodyTimeout:
            self._errors["body_timeout"] += 1
            raise

    async def _whole(self, receive: Receive, declared_length: int | None, limit: BodyLimit) -> bytes:
        if declared_length is not None and declared_length > limit.size:
            raise limit.refusal()
        message = await self._deadlines.receive(receive)
        if message["type"] == "http.disconnect":
            raise ClientGone
        body: bytes = message.get("body", b"")
        if len(body) > limit.size:
            raise limit.refusal()
        if not message.get("more_body", False):  # the usual case: one message holds it all
            return body
        # Gathered in a BytesIO: its value is handed over without a copy, so the body is held once.
        buffer = io.BytesIO()
        buffer.write(body)
        size = len(body)
        while message.get("more_body", False):
            message = await self._deadlines.receive(receive)
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit.size:
                raise limit.refusal()
            buffer.write(chunk)
        return buffer.getvalue()

    def stream(self, receive: Receive, declared_length: int | None, limit: BodyLimit) -> AsyncIterator[bytes]:
        """The body as it arrives, refused once it grows over ``limit`` (at once if declared so)."""
        if declared_length is not None and declared_length > limit.size:
            self._errors["body_too_large"] += 1
            raise limit.refusal()
        return self._pieces(receive, limit)

    async def _pieces(self, receive: Receive, limit: BodyLimit) -> AsyncIterator[bytes]:
        size = 0
        while True:
            try:
                message = await self._deadlines.receive(receive)
            except BodyTimeout:
                self._errors["body_timeout"] += 1
                raise
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit.size:
                self._errors["body_too_large"] += 1
                raise limit.refusal()
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return


_decoder = msgspec.json.Decoder(ModelRequest)


def read_model_request(body: bytes) -> ModelRequest:
    """The routing fields of an Ollama request body; the body itself is forwarded untouched."""
    if not body.strip():
        raise BadRequest("missing request body")
    try:
        return _decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"invalid request body: {exc}") from exc
