"""Serving a Prometheus registry: the check of the optional bearer token, the text exposition, and a
small HTTP/1.1 server for a metrics port of its own (``OLLAMAFLOW_*_METRICS_PORT``).

The server answers ``GET /metrics`` only, one request per connection, with the request head bounded
(8 KiB, 10 s): a scraper needs nothing more, and it keeps the plane's main port out of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import Iterable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

__all__ = ["CONTENT_TYPE", "MetricsExposition"]

CONTENT_TYPE = CONTENT_TYPE_LATEST.encode()
_MAX_HEAD = 8192
_HEAD_TIMEOUT = 10.0


class MetricsExposition:
    """One registry, shown to scrapers that bring ``token`` (or to all when it is empty)."""

    def __init__(self, registry: CollectorRegistry, token: str = "") -> None:
        self.registry = registry
        self._expected = f"Bearer {token}".encode() if token else b""

    def authorized(self, headers: Iterable[tuple[bytes, bytes]]) -> bool:
        """Do the (lower-case) request headers carry the token, when one is required?"""
        if not self._expected:
            return True
        for name, value in headers:
            if name == b"authorization":
                return hmac.compare_digest(value.strip(), self._expected)
        return False

    def body(self) -> bytes:
        return generate_latest(self.registry)

    async def serve(self, host: str, port: int) -> asyncio.Server:
        """Listen on ``host:port`` until the returned server is closed."""
        return await asyncio.start_server(self._connection, host, port, limit=_MAX_HEAD)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, body, content_type, head_only = await self._answer(reader)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        head = b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % (
            status,
            _REASONS[status],
            content_type,
            len(body),
        )
        try:
            writer.write(head if head_only else head + body)
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[int, bytes, bytes, bool]:
        async with asyncio.timeout(_HEAD_TIMEOUT):
            head = await reader.readuntil(b"\r\n\r\n")  # over _MAX_HEAD: LimitOverrunError
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            return 400, b"bad request line\n", b"text/plain", False
        method, target = parts[0], parts[1].partition(b"?")[0]
        if target != b"/metrics":
            return 404, b"only /metrics here\n", b"text/plain", False
        if method not in (b"GET", b"HEAD"):
            return 405, b"method not allowed\n", b"text/plain", False
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if sep:
                headers.append((name.strip().lower(), value.strip()))
        if not self.authorized(headers):
            return 401, b"a bearer token is required (OLLAMAFLOW_METRICS_TOKEN)\n", b"text/plain", False
        return 200, self.body(), CONTENT_TYPE, method == b"HEAD"


_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    401: b"Unauthorized",
    404: b"Not Found",
    405: b"Method Not Allowed",
}
