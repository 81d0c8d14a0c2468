"""The builtin upstream client: pooled keep-alive connections per backend origin, each a
``dataplane.upstream.http1`` connection.

It keeps the contract of ``dataplane.upstream.transport`` (the time limit in every state, bounded memory, a
request never sent twice once it may have reached the backend). The connection (a lean HTTP/1.1
client over llhttp) measured 1.6-1.8x aiohttp's throughput through the data plane, which measured
6-8x httpx's; ``dataplane.upstream.aiohttp_client`` is the reference it is tested against. Bytes pass
through untouched: no decompression, and no header of the client's own invention reaches the
backend. Proxy environment variables are not read: backends are reached directly.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import ssl

from dataplane.upstream.http1 import Connection, Response
from dataplane.upstream.origin import Origin
from dataplane.upstream.transport import (
    CLIENT_ERRORS,
    ConnectFailed,
    ConnectTimedOut,
    PoolTimeout,
    connect_failed,
    upstream_error,
)
from shared.errors import UpstreamError

__all__ = ["Upstream"]

# Idle connections older than this are closed instead of reused (servers drop idle ones eventually).
KEEPALIVE_S = 30.0


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
    """Sends requests to backends over pooled keep-alive connections: at most ``max_connections``
    open at once, idle ones included (the least recently used idle one gives way to a new one)."""

    def __init__(
        self,
        *,
        connect_timeout: float,
        max_connections: int,
        ssl_context: ssl.SSLContext | None = None,
        idle_expiry: float = KEEPALIVE_S,
    ) -> None:
        """``ssl_context`` verifies https backends (default: the system's trusted certificates)."""
        self._connect_timeout = connect_timeout
        self._max_connections = max_connections
        self._idle_expiry = idle_expiry
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
        self, backend_id: str, origin: Origin, head: bytes, body: bytes, progress_timeout: float
    ) -> Response:
        """Send a serialised request head and body; return once the status line and headers are in.

        The caller reads the body turning ``CLIENT_ERRORS`` into ``upstream_error``, then releases
        the response (connection reused) or closes it (connection dropped). Once written, a request
        is never written again: an error surfaces instead (``dataplane.upstream.transport``).
        """
        if self._loop is None or self._closing:
            raise UpstreamError("the upstream client is not started")
        conn = await self._acquire(backend_id, origin, progress_timeout)
        # No await between taking the connection (checked usable) and writing on it: a backend that
        # closed it earlier was seen, one that closes it from now on may have read the request.
        try:
            return await conn.request(head, body, progress_timeout)
        except CLIENT_ERRORS as exc:
            raise upstream_error(backend_id, exc) from exc

    async def _acquire(self, backend_id: str, origin: Origin, progress_timeout: float) -> Connection:
        """An idle connection to ``origin``, else a new one, waiting (at most ``progress_timeout``) while all
        slots are taken."""
        assert self._loop is not None
        deadline = 0.0
        while True:
            conn = self._idle(origin)
            if conn is not None:
                return conn
            if self._open < self._max_connections:
                return await self._connect(backend_id, origin, min(progress_timeout, self._connect_timeout))
            if not deadline:
                deadline = self._loop.time() + progress_timeout
            self._evict_one()  # an idle connection elsewhere gives way; its loss wakes a waiter
            waiter = self._loop.create_future()
            self._slot_waiters.append(waiter)
            try:
                async with asyncio.timeout_at(deadline):
                    await waiter
            except (TimeoutError, asyncio.CancelledError) as exc:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # pass the wake-up on, or the next waiter would miss it
                if isinstance(exc, TimeoutError):
                    raise PoolTimeout(
                        f"no upstream connection for backend {backend_id} came free within "
                        f"{progress_timeout:g}s (all {self._max_connections} in use: "
                        "OLLAMAFLOW_UPSTREAM_MAX_CONNECTIONS)"
                    ) from None
                raise

    def _idle(self, origin: Origin) -> Connection | None:
        pool = self._pools.get(origin)
        if pool is None:
            return None
        assert self._loop is not None
        stale_before = self._loop.time() - self._idle_expiry
        while pool.idle:
            conn = pool.idle.pop()
            if conn.usable and conn.idle_since > stale_before:
                return conn
            conn.close()
        return None

    def _evict_one(self) -> None:
        """Close the least recently used idle connection, whatever its origin."""
        oldest: _Pool | None = None
        for pool in self._pools.values():  # each pool's idle list is oldest first
            if pool.idle and (oldest is None or pool.idle[0].idle_since < oldest.idle[0].idle_since):
                oldest = pool
        if oldest is not None:
            oldest.idle.pop(0).close()

    async def _connect(self, backend_id: str, origin: Origin, within: float) -> Connection:
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
                within,
            )
        except BaseException as exc:
            self._free_slot(conn)  # a cancelled connect may still report the connection lost later
            if isinstance(exc, TimeoutError):
                raise ConnectTimedOut(
                    f"timed out connecting to backend {backend_id} (after {within:g}s)"
                ) from exc
            if isinstance(exc, OSError):
                raise connect_failed(backend_id, exc) from exc
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
