"""Raw ASGI plumbing: read a body, send a reply, stream chunks, notice a client that went away."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "JSON",
    "NDJSON",
    "OPENAI_JSON",
    "SSE",
    "TEXT",
    "ApiError",
    "ClientGone",
    "Receive",
    "Request",
    "Send",
    "Streamer",
    "read_body",
    "send_body",
    "until_disconnect",
]

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Header = tuple[bytes, bytes]

JSON = b"application/json; charset=utf-8"
OPENAI_JSON = b"application/json"
NDJSON = b"application/x-ndjson"
SSE = b"text/event-stream; charset=utf-8"
TEXT = b"text/plain; charset=utf-8"


class ClientGone(Exception):
    """The client closed the connection before the reply was complete."""


class ApiError(Exception):
    """An error reply before the first byte; the route renders it in its API's error shape."""

    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code


@dataclass(slots=True)
class Request:
    method: str
    path: str
    headers: list[Header]
    body: bytes
    receive: Receive
    send: Send

    @property
    def head(self) -> bool:
        return self.method == "HEAD"


async def read_body(receive: Receive) -> bytes:
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientGone
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    parts = [body]
    while message.get("more_body", False):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        parts.append(message.get("body", b""))
    return b"".join(parts)


async def send_body(
    send: Send,
    status: int,
    content_type: bytes | None,
    body: bytes,
    *,
    head: bool = False,
    headers: Iterable[Header] = (),
) -> None:
    """A complete reply with Content-Length (HEAD: the same headers, no body)."""
    start: list[Header] = [(b"content-length", b"%d" % len(body)), *headers]
    if content_type is not None:
        start.append((b"content-type", content_type))
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": b"" if head else body})


class Streamer:
    """A chunked reply; headers go out with the first chunk so an early error can still pick its status."""

    __slots__ = ("_content_type", "_headers", "_send", "started")

    def __init__(self, send: Send, content_type: bytes, headers: Iterable[Header] = ()) -> None:
        self._send = send
        self._content_type = content_type
        self._headers = list(headers)
        self.started = False

    async def write(self, chunk: bytes) -> None:
        if not self.started:
            self.started = True
            headers = [(b"content-type", self._content_type), *self._headers]
            await self._send({"type": "http.response.start", "status": 200, "headers": headers})
        await self._send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def end(self) -> None:
        if not self.started:
            await self.write(b"")
        await self._send({"type": "http.response.body", "body": b"", "more_body": False})


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def until_disconnect(receive: Receive, work: Coroutine[Any, Any, None]) -> bool:
    """Run ``work`` unless the client goes away first; returns False when it was cut short.

    granian and uvicorn both accept a ``send`` to a closed connection silently, so only watching
    ``receive`` for ``http.disconnect`` stops a generation in time.
    """
    job = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait((job, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (job, watcher):
            if not task.done():
                task.cancel()
        for task in (job, watcher):
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if job.cancelled():
        return False
    job.result()  # re-raises an error of the work itself
    return True
