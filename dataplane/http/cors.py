"""CORS for browser clients of the data plane (``OLLAMAFLOW_DATAPLANE_CORS_ORIGINS``), off by default.

A web page on another origin (a model playground, an API explorer) may call the Ollama and OpenAI
routes only if the answers say that its origin may read them. With origins configured:

- a **preflight** (``OPTIONS`` carrying ``Origin`` and ``Access-Control-Request-Method``) from an
  allowed origin is answered here, at once, whatever the path: ``204`` allowing the data plane's
  methods and whatever request headers the browser asked for (API keys, ``X-Request-ID``, sticky or
  label headers), cached by the browser for ``MAX_AGE`` seconds. From any other origin it is a
  ``403``, without CORS headers, so the browser refuses the request;
- every other answer to a request from an allowed origin, streamed ones included, carries
  ``Access-Control-Allow-Origin`` (the origin itself, or ``*`` when every origin is allowed), ``Vary:
  Origin`` and the OllamaFlow headers a page may read (``EXPOSED``). Requests from other origins, or
  without ``Origin`` (every non-browser client), are answered as without CORS.

Without origins the data plane never builds a ``Cors``, and its hot path does not look for ``Origin``.
No credentials mode: API keys travel in headers, never in cookies.
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from typing import Any

from dataplane.http.incoming import Receive
from dataplane.http.responses import TEXT, Send, send_bytes

__all__ = ["EXPOSED", "MAX_AGE", "METHODS", "Cors", "request_origin"]

METHODS = b"GET, HEAD, POST, DELETE, OPTIONS"
EXPOSED = (
    b"X-OllamaFlow-Request, X-OllamaFlow-Backend, X-OllamaFlow-Queue-Ms, X-OllamaFlow-Route, Retry-After"
)
MAX_AGE = b"600"
# What a browser may ask to send: header names, comma-separated (bounded by the client limits anyway).
_REQUESTED_HEADERS = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+(?:[ \t]*,[ \t]*[!#$%&'*+.^_`|~0-9A-Za-z-]+)*")
_MAX_REQUESTED = 2048


def request_origin(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The request's ``Origin`` header, if it has one."""
    for name, value in headers:
        if name == b"origin":
            return value
    return None


class Cors:
    """The allowed origins and the answers they get."""

    def __init__(self, origins: tuple[str, ...]) -> None:
        self.any = "*" in origins
        self.origins = frozenset(origin.encode() for origin in origins if origin != "*")

    def allows(self, origin: bytes) -> bool:
        return self.any or origin.lower() in self.origins

    def _allow_origin(self, origin: bytes) -> list[tuple[bytes, bytes]]:
        if self.any:
            return [(b"access-control-allow-origin", b"*")]
        return [(b"access-control-allow-origin", origin), (b"vary", b"Origin")]

    async def handle(
        self,
        scope: MutableMapping[str, Any],
        receive: Receive,
        send: Send,
        origin: bytes,
        app: Any,
    ) -> None:
        """Answer a preflight, or run ``app`` with CORS headers added to an allowed origin's answer."""
        headers = scope["headers"]
        if scope["method"] == "OPTIONS":
            method = requested = None
            for name, value in headers:
                if name == b"access-control-request-method":
                    method = value
                elif name == b"access-control-request-headers":
                    requested = value
            if method is not None:
                await self._preflight(send, origin, requested)
                return
        if not self.allows(origin):
            await app(scope, receive, send)
            return
        extra = [*self._allow_origin(origin), (b"access-control-expose-headers", EXPOSED)]

        async def send_with_cors(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await app(scope, receive, send_with_cors)

    async def _preflight(self, send: Send, origin: bytes, requested: bytes | None) -> None:
        if not self.allows(origin):
            await send_bytes(send, 403, b"CORS: origin not allowed\n", TEXT)
            return
        answer = [
            *self._allow_origin(origin),
            (b"access-control-allow-methods", METHODS),
            (b"access-control-max-age", MAX_AGE),
        ]
        if requested is not None and requested.strip():
            asked = requested.strip()
            if len(asked) > _MAX_REQUESTED or not _REQUESTED_HEADERS.fullmatch(asked):
                await send_bytes(send, 400, b"CORS: malformed Access-Control-Request-Headers\n", TEXT)
                return
            answer.append((b"access-control-allow-headers", asked))
        await send({"type": "http.response.start", "status": 204, "headers": answer})
        await send({"type": "http.response.body", "body": b""})
