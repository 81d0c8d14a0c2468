"""The upstream client's contract: what the data plane needs from an HTTP/1.1 client to its backends.

The proxy, the translated relay (``dataplane.proxy.crossing``) and the listings depend on this module
only. Two clients keep it: ``dataplane.upstream.builtin`` (the builtin one, on
``dataplane.upstream.http1``; the default) and ``dataplane.upstream.aiohttp_client`` (a reference on
aiohttp), chosen by ``OLLAMAFLOW_UPSTREAM_CLIENT``; one contract suite (tests/dataplane/transport)
runs against both.

A request goes out as a serialised head (request line and header lines, ending in a blank line) and
a body; bytes pass through untouched both ways (no decompression, no header the client invents).

Time limit. ``request`` takes ``progress_timeout``, the frontend's ``TimeoutMs`` in seconds, and the
request fails when **no progress** was made for that long, in every state: waiting for a free
connection, connecting (at most ``min(connect timeout, progress_timeout)``), waiting for the status
line and headers after the request was written, and reading the body, where progress is a byte
arriving from the backend or -- while reading is paused because ``HIGH_WATER`` bytes wait for a
reader that is not taking them -- the reader taking a chunk. A long answer that keeps coming is
never cut off. Memory per response is bounded: reading from the backend pauses at the high-water
mark until the reader catches up.

Errors. ``request`` raises ``UpstreamError`` subclasses naming the backend: ``RequestNotSent`` ones
(``ConnectFailed``, ``ConnectTimedOut``, ``PoolTimeout``) when the request certainly never reached
the backend, anything else when it may have. A client never sends a request twice on its own once
it may have reached the backend (only a pooled connection found closed *before* writing is
replaced). Reading a body raises the plain ``CLIENT_ERRORS`` (cheap on the hot path), which
``upstream_error`` turns into ``UpstreamError`` naming the backend.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Protocol

from dataplane.upstream.origin import Origin
from shared.errors import UpstreamError, UpstreamProtocolError, UpstreamTimeout, UpstreamUnavailable

__all__ = [
    "CLIENT_ERRORS",
    "HIGH_WATER",
    "AnswerTooLarge",
    "BadResponse",
    "BodyTooLarge",
    "BrokenBody",
    "ConnectFailed",
    "ConnectTimedOut",
    "Disconnected",
    "PoolTimeout",
    "ReadTimeout",
    "RequestNotSent",
    "Transport",
    "UpstreamResponse",
    "connect_failed",
    "upstream_error",
    "upstream_errors",
]

# Body bytes a response may hold for its reader before reading from the backend pauses.
HIGH_WATER = 256 * 1024


# What reading a response raises (plain exceptions: ``upstream_error`` names the backend).


class BadResponse(Exception):
    """The backend's answer is not valid HTTP/1.1."""


class Disconnected(Exception):
    """The backend closed the connection before the response began."""


class BrokenBody(Exception):
    """The connection ended in the middle of the response body."""


class ReadTimeout(Exception):
    """No progress within the time limit; the message says in which state."""


class BodyTooLarge(Exception):
    """``read(limit)`` met a body over its limit; the connection is dropped."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"its answer is larger than {limit} bytes")
        self.limit = limit


CLIENT_ERRORS = (ReadTimeout, Disconnected, BrokenBody, BadResponse, BodyTooLarge, OSError)


# What ``request`` raises.


class RequestNotSent(UpstreamError):
    """The request certainly did not reach the backend: it may go to another one, or again."""


class ConnectFailed(RequestNotSent, UpstreamUnavailable):
    """No connection was made (refused, unreachable, bad URL, TLS verification failed)."""


class ConnectTimedOut(RequestNotSent, UpstreamTimeout):
    """The connection was not made in time."""


class PoolTimeout(RequestNotSent, UpstreamTimeout):
    """Every connection slot stayed taken for the whole time limit (no fault of the backend's)."""


class AnswerTooLarge(UpstreamProtocolError):
    """An answer that had to be read whole was over its limit: never retried, never ejects."""


def connect_failed(backend_id: str, exc: BaseException) -> ConnectFailed:
    """A refused or failed connection: the client hears which backend and, for a certificate that did
    not verify, that much; the OS error (addresses, errno) goes to the log only."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLCertVerificationError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, ssl.SSLCertVerificationError):
        message = f"cannot connect to backend {backend_id}: its TLS certificate failed verification"
        return ConnectFailed(message, str(cause))
    return ConnectFailed(f"cannot connect to backend {backend_id}", f"{type(exc).__name__}: {exc}")


def upstream_error(backend_id: str, exc: BaseException) -> UpstreamError:
    """The UpstreamError subclass for one of ``CLIENT_ERRORS``, naming the backend."""
    if isinstance(exc, ReadTimeout):
        return UpstreamTimeout(f"backend {backend_id} {exc}")
    if isinstance(exc, Disconnected):
        return UpstreamProtocolError(f"backend {backend_id} closed the connection")
    if isinstance(exc, BrokenBody):
        return UpstreamProtocolError(f"backend {backend_id} sent a broken body", str(exc))
    if isinstance(exc, BadResponse):
        return UpstreamProtocolError(f"backend {backend_id} sent an unreadable answer", str(exc))
    if isinstance(exc, BodyTooLarge):
        return AnswerTooLarge(f"backend {backend_id}: {exc}")
    # An OS error names addresses and system calls: the log's business, not the client's.
    detail = f"{type(exc).__name__}: {exc}"
    return UpstreamUnavailable(f"the connection to backend {backend_id} failed", detail)


@contextmanager
def upstream_errors(backend_id: str) -> Iterator[None]:
    """``upstream_error`` as a context manager, for code off the hot path (it costs ~2.6 us a use)."""
    try:
        yield
    except CLIENT_ERRORS as exc:
        raise upstream_error(backend_id, exc) from exc


class UpstreamResponse(Protocol):
    """A response whose status line and headers are in; its body is read once, whole or in chunks.

    The caller ends every response with ``release`` (read to the end: the connection may carry the
    next request) or ``close`` (drop the connection, so that the backend notices and stops).
    """

    status: int
    headers: list[tuple[bytes, bytes]]  # as received: original case, repeated names kept
    content_length: int | None  # None for chunked and until-close bodies
    content_type: bytes

    async def read(self, limit: int) -> bytes:
        """The whole body; ``BodyTooLarge`` (connection dropped) once it is over ``limit`` bytes."""
        ...

    def iter_chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives: whatever came in since the last chunk, in one piece."""
        ...

    def release(self) -> None: ...

    def close(self) -> None: ...


class Transport(Protocol):
    """Pooled keep-alive connections to backend origins; ``start`` before use, ``close`` at the end."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def request(
        self, backend_id: str, origin: Origin, head: bytes, body: bytes, progress_timeout: float
    ) -> UpstreamResponse:
        """Send ``head`` (serialised, Host and Content-Length included) and ``body``; return once the
        status line and headers are in (interim 1xx answers skipped). ``progress_timeout``: see the module."""
        ...
