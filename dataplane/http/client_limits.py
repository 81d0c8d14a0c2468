"""What one client connection may make the data plane hold, enforced in uvicorn's HTTP protocol.

uvicorn on httptools bounds neither the size nor the count of request headers, nor the time they take
to arrive, and keeps a connection whose next request stops halfway for ever. ``ClientProtocol`` is
uvicorn's httptools protocol with those bounds added (pipelining, flow control and 100-continue stay
uvicorn's):

- request line + headers: at most ``max_header_bytes`` (counted as the bytes arrive, so the parser
  never buffers much more) and ``max_headers`` headers, else ``431``;
- the headers must be complete ``header_timeout`` after the connection opened, or after the first
  byte of the next request on a kept-alive one, else ``408``;
- an idle kept-alive connection is closed after ``keep_alive_timeout``; so is one still sending the
  body of a request already answered (e.g. after a 413);
- a client that accepts no bytes for ``send_timeout`` while an answer waits for it is cut off, so
  the app sees ``http.disconnect`` and stops its stream;
- beyond ``max_connections`` open connections a new one gets ``503`` at once;
- protocol upgrades (WebSocket) get ``400``; an ``h2c`` upgrade offer is ignored, as HTTP/1.1 allows.

When the server stops (``shutdown``, the drain of ``dataplane.drain``), each connection ends after
what is under way: an answer in progress goes out with ``Connection: close`` (if its head has not gone
yet) and the connection closes after it; a request whose head is arriving is served the same way; a
connection that has sent nothing since it opened gets ``FRESH_GRACE`` to send its request (a client
that connects sends at once: closing it would reset a request already on its way); an idle kept-alive
connection closes at once.

A refused client gets a short plain-text answer with ``Connection: close``; the connection then
lingers a moment, discarding what the client still sends, so that the answer is read rather than
lost to a reset. Each refusal is logged at DEBUG (never with a request line or header value, which
can hold secrets) and counted by kind in ``errors`` (the data plane's reports carry them).

All read deadlines share one lazily re-armed timer per connection: a request costs a few attribute
writes and a clock read, not a timer of its own.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from dataplane.http.write_cork import Cork

__all__ = ["ClientLimits", "ClientProtocol", "raise_open_files_limit"]

log = logging.getLogger("ollamaflow.dataplane.clients")

# How long a refused connection stays open, discarding input, after its answer and FIN went out.
LINGER = 1.0

# What the deadline in force means when it passes.
_HEAD = 1  # the request headers are late: 408
_CLOSE = 2  # idle keep-alive, a body nobody reads any more, or a lingering refusal: close quietly

# Per header, the bytes that on_header does not see (": " and CRLF).
_HEADER_OVERHEAD = 4

# When the server stops: how long a connection that has sent nothing yet may take to start its request.
FRESH_GRACE = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientLimits:
    """The bounds, from the data plane's settings (their defaults and OLLAMAFLOW_CLIENT_* names)."""

    max_header_bytes: int
    max_headers: int
    header_timeout: float
    keep_alive_timeout: float
    send_timeout: float
    max_connections: int


class _Refused(Exception):
    """Raised in a parser callback to stop parsing; the refusal itself is in ``_refusal``."""


class ClientProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, bounded by ``limits``; refusals are counted in ``errors``."""

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: ClientLimits,
        errors: Counter[str],
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._limits = limits
        self._errors = errors
        self._max_header_bytes = limits.max_header_bytes
        self._max_headers = limits.max_headers
        self._header_timeout = limits.header_timeout
        self._keep_alive_timeout = limits.keep_alive_timeout
        # The timer never sleeps longer than the shortest timeout, so that a deadline set later
        # (the next request's header deadline) is never earlier than the armed timer.
        self._period = min(limits.header_timeout, limits.keep_alive_timeout, limits.send_timeout)
        self._in_head = True  # between requests or inside a request's head
        self._head_started = True  # a byte of that head arrived (or, first request: the connection opened)
        self._head_bytes = 0  # raw bytes received while in the head: an upper bound of its size
        self._discard = False  # refused: read input only to throw it away
        self._refusal: tuple[int, str, str] | None = None
        self._deadline = 0.0  # 0: no read deadline in force
        self._deadline_kind = _HEAD
        self._stall_at = 0.0  # 0: the client is taking our bytes
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._draining = False  # the server stops: every answer from now on closes its connection

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._cork = Cork(transport, self.loop)
        if len(self.connections) > self._limits.max_connections:
            # Not counted among the connections any more: it holds a descriptor only while lingering.
            self.connections.discard(self)
            self._refuse(503, "connection_limit", "too many client connections")
            return
        self._deadline_in(self._header_timeout, _HEAD)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._discard:
            return
        if self._in_head:
            self._head_bytes += len(data)
            if not self._head_started:  # the first byte after a request: its successor's head begins
                self._head_started = True
                self._deadline_in(self._header_timeout, _HEAD)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Only an h2c offer gets here (WebSocket and other upgrades were refused): its request was
            # served as HTTP/1.1, but the parser dropped what followed it, so this connection ends.
            self._end_after_response()
            return
        except httptools.HttpParserError:
            refusal = self._refusal
            if refusal is None:
                refusal = (400, "invalid_request", "Invalid HTTP request received.")
            self._refuse(*refusal)
            return
        if self._in_head:
            if self._head_started:
                # Still incomplete and already too large: the parser holds at most one read more.
                if self._head_bytes > self._max_header_bytes:
                    self._refuse(431, "header_too_large", "Request header fields too large.")
            elif self.cycle is not None and self.scope is not self.cycle.scope:
                # The next (pipelined) request began in the read that ended this one (uvicorn makes a
                # new scope when a message begins): its deadline runs; its bytes count from the next read.
                self._head_started = True
                self._deadline_in(self._header_timeout, _HEAD)

    def pause_writing(self) -> None:
        now = self.loop.time()
        self._stall_at = now + self._limits.send_timeout
        self._arm(self._stall_at, now)
        super().pause_writing()

    def resume_writing(self) -> None:
        self._stall_at = 0.0
        super().resume_writing()

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(self.headers) >= self._max_headers:
            self._stop(431, "too_many_headers", "Too many request header fields.")
        # uvicorn's, inlined: this runs for every header of every request.
        name = name.lower()
        value = value.rstrip(b" \t")  # trailing whitespace is not part of the value (RFC 9110 5.5)
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self._head_bytes > self._max_header_bytes and self._head_size() > self._max_header_bytes:
            self._stop(431, "header_too_large", "Request header fields too large.")
        if self.parser.should_upgrade() and self._get_upgrade() != b"h2c":
            self._stop(400, "upgrade", "Protocol upgrades (WebSocket) and CONNECT are not supported.")
        self._in_head = False
        self._deadline = 0.0  # the body is the app's to read, within its own deadline
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None:  # its answer's head and a whole body leave in one send
            cycle.transport = self._cork  # type: ignore[assignment]
            self._cork.arm()
        if self._draining and self.cycle is not None:  # served, then the connection closes
            self.cycle.keep_alive = False

    def on_message_complete(self) -> None:
        self._in_head = True
        self._head_started = False
        self._head_bytes = 0
        cycle = self.cycle
        if cycle is not None and cycle.response_complete:  # drained the body of an answered request
            self._deadline_in(self._keep_alive_timeout, _CLOSE)
        super().on_message_complete()

    def on_response_complete(self) -> None:
        # uvicorn's, with our deadline in place of its keep-alive timer (which any byte cancelled).
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        elif not self._in_head or not self._head_started:
            # Idle between requests, or the rest of an answered request's body still to come: either
            # way the client has the keep-alive timeout to start its next request.
            self._deadline_in(self._keep_alive_timeout, _CLOSE)
        # else the next request's head has begun and its own deadline runs

    # Graceful stop

    def shutdown(self) -> None:
        """The server stops: end this connection after what is under way (see the module doc)."""
        self._draining = True
        transport = self.transport
        if transport is None or transport.is_closing() or self._discard:
            return  # closed, or a refusal lingering that closes by itself
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.keep_alive = False  # "Connection: close" on its answer, then closed
        elif self._in_head and self._head_bytes:
            pass  # the next request is arriving: on_headers_complete makes it the last
        elif cycle is None:  # opened and nothing sent yet: its request is surely on its way
            self._head_started = False  # so that its first byte arms the header deadline again
            self._deadline_in(FRESH_GRACE, _CLOSE)
        else:  # idle between requests
            transport.close()

    # Refusals

    def _head_size(self) -> int:
        size = len(self.url)
        for name, value in self.headers:
            size += len(name) + len(value) + _HEADER_OVERHEAD
        return size

    def _stop(self, status: int, kind: str, message: str) -> None:
        self._refusal = (status, kind, message)
        raise _Refused

    def _refuse(self, status: int, kind: str, message: str) -> None:
        self._errors[kind] += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("client %s: %d %s", _peer(self.client), status, message)
        self._discard = True
        self._refusal = None
        cycle = self.cycle
        if self._in_head or cycle is None:
            if cycle is not None and not cycle.response_complete:
                # An earlier request's answer is still going out: the connection ends after it.
                self._deadline = 0.0
                cycle.keep_alive = False
                return
        elif cycle.response_started or self.pipeline:
            self.transport.close()  # broken in the middle of a body: nothing can be said in-band
            return
        else:  # the body of the request the app holds is broken: the app sees the client leave
            cycle.disconnected = True
            cycle.message_event.set()
        self._answer(status, message)

    def _answer(self, status: int, message: str) -> None:
        transport = self.transport
        if transport.is_closing():
            return
        self._cork.flush()  # nothing is held when no answer is going out; this keeps order if so
        body = message.encode()
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.append(
            b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % len(body)
        )
        content.append(body)
        transport.write(b"".join(content))
        self.flow.resume_reading()  # keep reading (and discarding) until the client closes
        if transport.can_write_eof():
            transport.write_eof()
            self._deadline_in(LINGER, _CLOSE)
        else:
            transport.close()

    def _end_after_response(self) -> None:
        self._discard = True
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            self.transport.close()
        else:
            cycle.keep_alive = False

    # The one timer

    def _deadline_in(self, seconds: float, kind: int) -> None:
        now = self.loop.time()
        at = now + seconds
        self._deadline = at
        self._deadline_kind = kind
        if self._timer is None or self._timer_at > at:  # rarely: the armed timer is due sooner
            self._arm(at, now)

    def _arm(self, at: float, now: float) -> None:
        at = min(at, now + self._period)
        if self._timer is None or self._timer_at > at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = at
            self._timer = self.loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        now = self.loop.time()
        if self._stall_at and now >= self._stall_at:
            self._errors["send_timeout"] += 1
            if log.isEnabledFor(logging.DEBUG):
                log.debug("client %s: took no data for %g s", _peer(self.client), self._limits.send_timeout)
            transport.abort()  # uvicorn then wakes the app's pending send, and the app sees the disconnect
            return
        deadline = self._deadline
        if deadline and now >= deadline:
            self._deadline = 0.0
            if self._deadline_kind == _HEAD:
                self._refuse(408, "header_timeout", "Request headers not received in time.")
            else:
                transport.close()
            return
        due = deadline
        if self._stall_at and (not due or self._stall_at < due):
            due = self._stall_at
        if due:
            self._arm(due, now)


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "?"


def raise_open_files_limit(needed: int) -> None:
    """Raise the soft RLIMIT_NOFILE toward the hard one; say so when ``needed`` still does not fit."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return
    wanted = max(soft, needed) if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and wanted > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (OSError, ValueError) as exc:
            log.info("cannot raise the open-files limit from %d to %d: %s", soft, wanted, exc)
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warning(
            "the open-files limit (%d) is below the %d descriptors the client and upstream connection "
            "limits may need; raise it (ulimit -n) or lower OLLAMAFLOW_CLIENT_MAX_CONNECTIONS",
            soft,
            needed,
        )
