"""The upstream leg: pooled keep-alive connections per backend origin, and their errors mapped onto ours.

The client is ``dataplane.http1`` (a lean HTTP/1.1 connection over llhttp): it measured several
times cheaper per request than aiohttp's ClientSession, which measured 6-8x faster than httpx
(DESIGN.md, "The hot path"). Bytes pass through untouched: no decompression, and no header of the
client's own invention reaches the backend.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import ssl
from collections.abc import Iterator
from contextlib import contextmanager

from dataplane.http1 import BadResponse, BrokenBody, Connection, Disconnected, ReadTimeout, Response
from dataplane.origin import Origin
from shared.errors import UpstreamError, UpstreamProtocolError, UpstreamTimeout, UpstreamUnavailable

__all__ = [
    "CLIENT_ERRORS",
    "ConnectFailed",
    "ConnectTimedOut",
    "Upstream",
    "upstream_error",
    "upstream_errors",
]

# Idle connections older than this are closed instead of reused (servers drop idle ones eventually).
KEEPALIVE_S = 30.0


class ConnectFailed(UpstreamUnavailable):
    """No connection was made, so nothing was sent: another backend may take the request."""


class ConnectTimedOut(UpstreamTimeout):
    """The connection was not made in time; nothing was sent either."""


# What the client raises: ``upstream_error`` turns each into an UpstreamError naming the backend.
CLIENT_ERRORS = (ReadTimeout, Disconnected, BrokenBody, BadResponse, OSError)


def upstream_error(backend_id: str, exc: BaseException) -> UpstreamError:
    """The UpstreamError subclass for one of ``CLIENT_ERRORS``, naming the backend."""
    if isinstance(exc, ReadTimeout):
        return UpstreamTimeout(f"backend {backend_id} did not answer in time")
    if isinstance(exc, Disconnected):
        return UpstreamProtocolError(f"backend {backend_id} closed the connection")
    if isinstance(exc, BrokenBody):
        return UpstreamProtocolError(f"backend {backend_id} sent a broken body: {exc}")
    if isinstance(exc, BadResponse):
        return UpstreamProtocolError(f"backend {backend_id} sent an unreadable answer: {exc}")
    return UpstreamUnavailable(f"connection to backend {backend_id} failed: {exc}")


@contextmanager
def upstream_errors(backend_id: str) -> Iterator[None]:
    """``upstream_error`` as a context manager, for code off the hot path (it costs ~2.6 us a use)."""
    try:
        yield
    except CLIENT_ERRORS as exc:
        raise upstream_error(backend_id, exc) from exc


class _Pool:
    """Idle connections to one origin, most recently used last."""

    __slots__ = ("idle",)

    def __init__(self) -> None:
        self.idle: list[Connection] = []

    def put(self, conn: Connection) -> None:
        self.idle.append(conn)

    def forget(self, conn: Connection) -> None:
        if conn in self.idle:
            self.idle.remove(conn)


class Upstream:
    """Sends requests to backends over pooled keep-alive connections, at most ``max_connections``."""

    def __init__(
        self, *, connect_timeout: float, max_connections: int, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        """``ssl_context`` verifies https backends (default: the system's trusted certificates)."""
        self._connect_timeout = connect_timeout
        self._max_connections = max_connections
        self._pools: dict[Origin, _Pool] = {}
        self._open = 0  # connections made or being made, idle ones included
        self._slot_waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._ssl = ssl_context
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._closing = False

    async def close(self) -> None:
        self._closing = True
        for pool in self._pools.values():
            for conn in pool.idle:
                conn.close()
            pool.idle.clear()
        self._pools.clear()

    async def request(
        self, backend_id: str, origin: Origin, head: bytes, body: bytes, read_timeout: float
    ) -> Response:
        """Send a serialised request head and body; return once the status line and headers are in.

        The caller reads the body turning ``CLIENT_ERRORS`` into ``upstream_error``, then releases
        the response (connection reused) or closes it (connection dropped).
        """
        if self._loop is None or self._closing:
            raise UpstreamError("the upstream client is not started")
        conn, reused = await self._acquire(backend_id, origin)
        try:
            try:
                return await conn.request(head, body, read_timeout)
            except Disconnected:
                if not reused:
                    raise
                # The backend closed a kept-alive connection just as we reused it (servers drop
                # idle ones): nothing was answered, so the request goes again on a fresh one.
                conn = await self._connect(backend_id, origin)
                return await conn.request(head, body, read_timeout)
        except CLIENT_ERRORS as exc:
            raise upstream_error(backend_id, exc) from exc

    async def _acquire(self, backend_id: str, origin: Origin) -> tuple[Connection, bool]:
        """An idle connection to ``origin`` (reused: True), else a new one, waiting while all slots
        are taken."""
        assert self._loop is not None
        while True:
            conn = self._idle(origin)
            if conn is not None:
                return conn, True
            if self._open < self._max_connections:
                return await self._connect(backend_id, origin), False
            self._evict_one()  # an idle connection elsewhere gives way; its loss wakes a waiter
            waiter = self._loop.create_future()
            self._slot_waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # pass the wake-up on, or the next waiter would miss it
                raise

    def _idle(self, origin: Origin) -> Connection | None:
        pool = self._pools.get(origin)
        if pool is None:
            return None
        assert self._loop is not None
        stale_before = self._loop.time() - KEEPALIVE_S
        while pool.idle:
            conn = pool.idle.pop()
            if not conn.closed and conn.idle_since > stale_before:
                return conn
            conn.close()
        return None

    def _evict_one(self) -> None:
        for pool in self._pools.values():
            if pool.idle:
                pool.idle.pop(0).close()  # the least recently used
                return

    async def _connect(self, backend_id: str, origin: Origin) -> Connection:
        assert self._loop is not None
        if origin.invalid:
            raise ConnectFailed(f"backend {backend_id} has an invalid URL: {origin.invalid}")
        self._open += 1
        loop = self._loop
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = _Pool()
        conn = Connection(
            loop, functools.partial(self._on_idle, pool), functools.partial(self._on_lost, pool)
        )
        conn.holds_slot = True
        try:
            await asyncio.wait_for(
                loop.create_connection(
                    lambda: conn,
                    origin.host,
                    origin.port,
                    ssl=self._ssl_context() if origin.tls else None,
                    server_hostname=origin.host if origin.tls else None,
                ),
                self._connect_timeout,
            )
        except BaseException as exc:
            self._free_slot(conn)  # a cancelled connect may still report the connection lost later
            if isinstance(exc, TimeoutError):
                raise ConnectTimedOut(f"timed out connecting to backend {backend_id}") from exc
            if isinstance(exc, OSError):
                raise ConnectFailed(f"cannot connect to backend {backend_id}: {exc}") from exc
            raise
        return conn

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    def _on_idle(self, pool: _Pool, conn: Connection) -> None:
        if self._closing:
            conn.close()
            return
        pool.put(conn)
        self._wake_one()

    def _on_lost(self, pool: _Pool, conn: Connection) -> None:
        pool.forget(conn)
        self._free_slot(conn)

    def _free_slot(self, conn: Connection) -> None:
        if conn.holds_slot:  # once per connection, whichever way it ended
            conn.holds_slot = False
            self._open -= 1
            self._wake_one()

    def _wake_one(self) -> None:
        while self._slot_waiters:
            waiter = self._slot_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
