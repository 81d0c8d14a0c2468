"""A lean HTTP/1.1 client connection for the upstream leg: one request at a time, kept alive.

The proxy sends a request it has already serialised (the head is mostly prepared per snapshot) and
relays the response bytes as they are, so a general client's work (URL objects, header multidicts,
cookie jars, payload wrappers, tracing) is all overhead here. This module writes one buffer per
request and parses the answer with llhttp (httptools), which calls back here only for the status,
the headers and each piece of body. Under wrk it cost a fraction of aiohttp's per-request CPU.

It keeps the contract of ``dataplane.upstream.transport``: its errors are that module's plain exceptions
(``dataplane.upstream.builtin`` names the backend in them), reading pauses at ``HIGH_WATER`` buffered bytes
until the reader takes them, and one lazily checked timer per connection enforces the time limit in
every state (no answer, no body bytes, or a paused answer that nobody takes).
"""

from __future__ import annotations

import asyncio
import collections
import socket
from collections.abc import AsyncIterator, Callable
from typing import cast

import httptools

from dataplane.upstream.transport import (
    HIGH_WATER,
    BadResponse,
    BodyTooLarge,
    BrokenBody,
    Disconnected,
    ReadTimeout,
)

__all__ = ["Connection", "Response"]


class Response:
    """Status, raw headers and the body as it arrives; read it whole or chunk by chunk.

    ``release`` hands a fully read connection back for reuse; ``close`` drops it (what a client
    that goes away does, so that the backend notices and stops).
    """

    __slots__ = (
        "_chunks",
        "_conn",
        "_done",
        "_error",
        "_size",
        "_waiter",
        "content_length",
        "content_type",
        "headers",
        "status",
    )

    def __init__(self, conn: Connection, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self._conn = conn
        self.status = status
        self.headers = headers  # as received: original case, repeated names kept
        self.content_length: int | None = None
        self.content_type = b""
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._done = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    @property
    def complete(self) -> bool:
        return self._done and self._error is None

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if self._size > HIGH_WATER:
            self._conn.pause()
        self._wake()

    def _finish(self, error: BaseException | None = None) -> None:
        if not self._done:
            self._done = True
            self._error = error
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def _wait(self) -> None:
        self._waiter = self._conn.loop.create_future()
        await self._waiter

    def _take(self) -> bytes:
        data = self._chunks.popleft() if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        if self._size > HIGH_WATER:
            self._conn.resume()
        self._size = 0
        return data

    async def read(self, limit: int) -> bytes:
        """The whole body, at most ``limit`` bytes (``BodyTooLarge`` and the connection dropped).

        A body over the high-water mark is taken as it arrives, so that reading resumes.
        """
        length = self.content_length
        if length is not None and length > limit:
            raise self._too_large(limit)
        parts: list[bytes] = []
        taken = 0
        while not self._done:
            if taken + self._size > limit:
                raise self._too_large(limit)
            if self._size > HIGH_WATER:  # reading is paused until these are taken
                chunk = self._take()
                parts.append(chunk)
                taken += len(chunk)
            else:
                await self._wait()
        if self._error is not None:
            raise self._error
        if taken + self._size > limit:
            raise self._too_large(limit)
        if not parts:  # the usual small answer: one piece, no copy
            return self._take() if self._chunks else b""
        if self._chunks:
            parts.append(self._take())
        return b"".join(parts)

    def _too_large(self, limit: int) -> BodyTooLarge:
        self._conn.abandon(self)
        return BodyTooLarge(limit)

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives: whatever has come in since the last chunk, in one piece."""
        while True:
            if self._chunks:
                yield self._take()
            elif self._done:
                if self._error is not None:
                    raise self._error
                return
            else:
                await self._wait()

    def release(self) -> None:
        self._conn.release(self)

    def close(self) -> None:
        self._conn.abandon(self)


class Connection(asyncio.Protocol):
    """One keep-alive connection to one backend origin, carrying one request at a time."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_idle: Callable[[Connection], None],
        on_lost: Callable[[Connection], None],
    ) -> None:
        self.loop = loop
        self._on_idle = on_idle  # a request ended cleanly: the connection may carry the next one
        self._on_lost = on_lost  # the connection is gone (called once, from connection_lost)
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self.closed = False
        self._eof = False  # the backend closed its side: no further request may go on this connection
        self.holds_slot = False  # counted in its pool's connection limit (the pool's bookkeeping)
        self.idle_since = 0.0
        # The request in progress.
        self._busy = False
        self._head_waiter: asyncio.Future[Response] | None = None
        self._response: Response | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._until_eof = False
        self._keep_alive = False
        self._message_done = False
        # Read timeout: checked lazily, so that each piece of data costs a clock read, not a timer.
        self._timeout = 0.0
        self._last_data = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = 0.0
        self._paused = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if not self._busy or self._message_done:  # bytes nobody asked for: the connection is unusable
            self.close()
            return
        self._last_data = self.loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(BadResponse(f"invalid HTTP response: {exc}"))
        except httptools.HttpParserUpgrade:
            self._fail(BadResponse("the backend switched protocols"))

    def eof_received(self) -> None:
        self._eof = True  # the transport closes; connection_lost follows

    @property
    def usable(self) -> bool:
        """Can a new request be written on this idle connection (the backend has not closed it)?"""
        transport = self._transport
        return not (self.closed or self._eof or transport is None or transport.is_closing())

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._stop_timer()
        if self._busy and not self._message_done:
            response = self._response
            if response is not None and self._until_eof:  # such a body ends with the connection
                self._message_done = True
                response._finish()
            else:
                error = (
                    Disconnected("closed the connection")
                    if response is None
                    else BrokenBody("closed the connection in the middle of the body")
                )
                self._fail(error)
        self._on_lost(self)

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self._message_done:  # a second answer to one request: the connection is unusable
            self.close()
            return
        status = self._parser.get_status_code()
        if status < 200:  # an interim answer (103 Early Hints...): the real one follows
            self._headers = []
            return
        response = Response(self, status, self._headers)
        chunked = False
        for name, value in self._headers:
            lower = name.lower()
            if lower == b"content-length":
                try:
                    response.content_length = int(value)
                except ValueError:
                    response.content_length = None
            elif lower == b"content-type":
                response.content_type = value
            elif lower == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
        if chunked:
            response.content_length = None
        self._until_eof = response.content_length is None and not chunked and status not in (204, 304)
        # Known now (version, Connection header); llhttp forgets it once the message is complete.
        self._keep_alive = self._parser.should_keep_alive()
        self._response = response
        waiter = self._head_waiter
        self._head_waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    def on_body(self, body: bytes) -> None:
        if self._response is not None and not self._message_done:
            self._response._feed(body)

    def on_message_complete(self) -> None:
        response = self._response
        if response is None or self._message_done:  # the end of an interim (or unasked-for) answer
            return
        self._message_done = True
        response._finish()

    # the request

    async def request(self, head: bytes, body: bytes, read_timeout: float) -> Response:
        """Send one request; return when the status line and headers are in.

        Fails with ``ReadTimeout`` when no byte moved for ``read_timeout`` (see ``_check_timeout``).
        """
        assert self._transport is not None and not self._busy
        self._busy = True
        self._headers = []
        self._response = None
        self._message_done = False
        self._until_eof = False
        waiter = self._head_waiter = self.loop.create_future()
        self._timeout = read_timeout
        self._last_data = now = self.loop.time()
        # The timer outlives requests: a kept-alive connection under load re-arms it once per timeout
        # period, not once per request. Only a shorter timeout than the armed one needs a new timer.
        if self._timer is None or self._timer_due > now + read_timeout:
            self._arm(now + read_timeout)
        try:
            try:
                self._transport.write(head + body if len(body) < 65536 else head)
                if len(body) >= 65536:
                    self._transport.write(body)
            except RuntimeError as exc:
                # uvloop refuses to write on a handle the backend's reset already closed, before
                # connection_lost has run: the same as a backend that closed the connection.
                raise Disconnected("closed the connection") from exc
            return await waiter
        except BaseException:
            self._busy = False
            self.close()  # cancelled or failed before the headers: the connection is unusable
            raise

    def _arm(self, due: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_due = due
        self._timer = self.loop.call_at(due, self._check_timeout)

    def _check_timeout(self) -> None:
        """No progress for the whole timeout fails the request. Progress is a byte from the backend,
        or, while reading is paused, the reader taking a chunk (``resume``): a reader that takes
        nothing (its client does not read) cannot hold the backend's connection for ever."""
        self._timer = None
        if not self._busy or self._message_done:
            return  # idle: the next request arms it again
        now = self.loop.time()
        if now < self._last_data + self._timeout:
            self._arm(self._last_data + self._timeout)
            return
        limit = f"{self._timeout:g}s"
        if self._response is None:
            self._fail(ReadTimeout(f"did not answer within {limit}"))
        elif self._paused:
            self._fail(ReadTimeout(f"was cut off: nothing of its answer was taken for {limit}"))
        else:
            self._fail(ReadTimeout(f"sent nothing for {limit}"))

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fail(self, error: BaseException) -> None:
        waiter = self._head_waiter
        self._head_waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        if self._response is not None:
            self._response._finish(error)
        self.close()

    def pause(self) -> None:
        if not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self._transport is not None and not self.closed:
            self._paused = False
            self._last_data = self.loop.time()  # the reader took a chunk: progress
            self._transport.resume_reading()

    def release(self, response: Response) -> None:
        """The caller is done with ``response``: reuse the connection if the answer ended cleanly."""
        if response is not self._response:
            return  # a stale response: its request is long over
        self._busy = False
        self._response = None
        self._headers = []
        if self.closed:
            return
        if not (self._message_done and response.complete and self._keep_alive):
            self.close()
            return
        self.resume()
        self.idle_since = self.loop.time()
        self._on_idle(self)

    def abandon(self, response: Response) -> None:
        """The caller gives up on ``response``: drop the connection, so that the backend notices."""
        if response is self._response:
            self.close()

    def close(self) -> None:
        """Drop the connection at once (a reply in progress is cut off); connection_lost follows."""
        if self._transport is not None and not self.closed:
            self.closed = True
            self._transport.abort()
