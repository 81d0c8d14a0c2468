"""The data plane's upstream contract (``dataplane.upstream.transport``) kept by calling ASGI apps in-process.

For logic tests: backends are simulators (``ollamaflow.sim.create_app``) reached by their origin's
host and port, with no socket, no server and no port. The request head is parsed back into an ASGI
scope; the response streams as the app sends it. Errors keep the contract's split: an origin with no
app is ``ConnectFailed`` (never sent), an app that fails before answering is ``Disconnected`` raised
as ``upstream_error`` makes it (as the real clients do), one that fails mid-body is ``BrokenBody``.
Socket behaviour (pools, timeouts, back-pressure) is the real clients' business and stays with their
contract suite (tests/dataplane/transport).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from dataplane.upstream.origin import Origin
from dataplane.upstream.transport import BodyTooLarge, BrokenBody, ConnectFailed, Disconnected, upstream_error

ASGIApp = Callable[[MutableMapping[str, Any], Any, Any], Awaitable[None]]

_END = object()


class AsgiResponse:
    def __init__(self, task: asyncio.Task[None], chunks: asyncio.Queue[Any], start: dict[str, Any]) -> None:
        self._task = task
        self._chunks = chunks
        self.status: int = start["status"]
        self.headers: list[tuple[bytes, bytes]] = [(bytes(k), bytes(v)) for k, v in start.get("headers", [])]
        found = {k.lower(): v for k, v in self.headers}
        length = found.get(b"content-length")
        self.content_length = int(length) if length is not None else None
        self.content_type: bytes = found.get(b"content-type", b"")

    async def read(self, limit: int) -> bytes:
        body = bytearray()
        async for chunk in self.iter_chunks():
            body += chunk
            if len(body) > limit:
                self.close()
                raise BodyTooLarge(limit)
        return bytes(body)

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        while True:
            chunk = await self._chunks.get()
            if chunk is _END:
                return
            if isinstance(chunk, BaseException):
                raise BrokenBody(str(chunk))
            yield chunk

    def release(self) -> None:
        self.close()

    def close(self) -> None:
        self._task.cancel()


class AsgiUpstream:
    """``dataplane.upstream.transport.Transport`` over ASGI apps keyed by (host, port)."""

    def __init__(self, apps: dict[tuple[str, int], ASGIApp]) -> None:
        self.apps = apps

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def request(
        self, backend_id: str, origin: Origin, head: bytes, body: bytes, progress_timeout: float
    ) -> AsgiResponse:
        app = self.apps.get((origin.host, origin.port))
        if app is None:
            raise ConnectFailed(f"cannot connect to backend {backend_id}", "no app at that origin")
        scope = _scope(head, origin)
        started: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        chunks: asyncio.Queue[Any] = asyncio.Queue()
        sent_body = False

        async def receive() -> dict[str, Any]:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # no disconnect until the response is dropped (cancelled)
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                started.set_result(message)
            elif message["type"] == "http.response.body":
                if message.get("body"):
                    chunks.put_nowait(bytes(message["body"]))
                if not message.get("more_body", False):
                    chunks.put_nowait(_END)

        async def run() -> None:
            try:
                await app(scope, receive, send)
            except Exception as exc:
                if not started.done():
                    started.set_exception(Disconnected(str(exc)))
                else:
                    chunks.put_nowait(exc)

        task = asyncio.create_task(run())
        try:
            start = await asyncio.wait_for(asyncio.shield(started), progress_timeout)
        except BaseException as exc:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            if isinstance(exc, Disconnected):  # as the real clients raise it
                raise upstream_error(backend_id, exc) from exc
            raise
        return AsgiResponse(task, chunks, start)


def _scope(head: bytes, origin: Origin) -> dict[str, Any]:
    request_line, *lines = head.split(b"\r\n")
    method, target, _ = request_line.split(b" ", 2)
    path, _, query = target.partition(b"?")
    headers = []
    for line in lines:
        if line:
            name, _, value = line.partition(b":")
            headers.append((name.strip().lower(), value.strip()))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method.decode(),
        "scheme": "https" if origin.tls else "http",
        "path": path.decode(),
        "raw_path": path,
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": (origin.host, origin.port),
    }
