"""A tiny backend that records what reaches it: the simulator answers like Ollama, this one shows
what the data plane actually sent (headers, query, exact body bytes) and can misbehave on cue.

Any method and path is recorded (``method``, ``path``); a POST's ``model`` picks the behaviour:
``echo`` (200 JSON), ``teapot`` (418 with a body), ``slow`` (no answer for 5 s), ``break`` (two
NDJSON lines, then the connection drops), ``flood`` (NDJSON lines as fast as they are taken, until the
reader goes away; counted in ``floods_ended``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web

__all__ = ["Recorded", "Recorder", "recorder"]


@dataclass
class Recorded:
    headers: dict[str, str]
    raw_headers: list[tuple[str, str]]
    query: str
    body: bytes
    method: str = "POST"
    path: str = ""  # as sent, percent-escapes kept


@dataclass
class Recorder:
    url: str = ""
    seen: list[Recorded] = field(default_factory=list)
    floods_ended: int = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(
            Recorded(
                headers=dict(request.headers),
                raw_headers=[(k, v) for k, v in request.headers.items()],
                query=request.query_string,
                body=body,
                method=request.method,
                path=request.raw_path.partition("?")[0],
            )
        )
        if request.method != "POST" or not body:
            return web.json_response({"models": []} if request.method == "GET" else {"ok": True})
        model = json.loads(body).get("model")
        if model == "teapot":
            return web.json_response({"error": "short and stout"}, status=418)
        if model == "slow":
            await asyncio.sleep(5)
        if model == "flood":
            response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
            await response.prepare(request)
            lines = b'{"message":{"role":"assistant","content":"' + b"x" * 1000 + b'"},"done":false}\n'
            try:
                while True:
                    await response.write(lines * 64)
            finally:
                self.floods_ended += 1
        if model == "break":
            response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
            await response.prepare(request)
            await response.write(b'{"done":false}\n{"done":fal')
            await asyncio.sleep(0.05)
            assert request.transport is not None
            request.transport.abort()
            return response
        return web.json_response({"ok": True})


@contextlib.asynccontextmanager
async def recorder() -> AsyncIterator[Recorder]:
    rec = Recorder()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", rec.handle)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    rec.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        yield rec
    finally:
        await runner.cleanup()
