"""The reference upstream client: ``dataplane.upstream.transport``'s contract kept on aiohttp.

The builtin client (``dataplane.upstream.builtin``) is the data plane's own code, a debt worth carrying only
while it can be swapped out: this one runs the same contract suite, and ``OLLAMAFLOW_UPSTREAM_CLIENT=
aiohttp`` puts it in the data plane's place. It takes the same serialised request head and parses it
back into method, target and headers (order, case and repeats kept), and adds no header of its own
(no User-Agent, Accept, Accept-Encoding or Content-Type; no cookies; no decompression; no redirects;
no proxy from the environment).

Where aiohttp's behaviour differs from the contract, this module closes the gap: aiohttp re-sends an
idempotent request whose reused connection broke, which the contract forbids once a request may
have reached the backend (switched off); and its read timeout stops while reading is paused for a
reader that takes nothing, so a timer here ends such a response after the time limit, as the
builtin client does. aiohttp counts only connections in use against ``max_connections`` (idle ones
are kept besides them and expire after ``idle_expiry``).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator

import aiohttp
import yarl

from dataplane.upstream.origin import Origin
from dataplane.upstream.transport import (
    HIGH_WATER,
    BadResponse,
    BodyTooLarge,
    BrokenBody,
    ConnectFailed,
    ConnectTimedOut,
    Disconnected,
    ReadTimeout,
    connect_failed,
    upstream_error,
)
from shared.errors import UpstreamError

__all__ = ["AiohttpUpstream"]

# Headers aiohttp would add by itself: the backend gets exactly the ones in the serialised head.
_SKIP_AUTO = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


def parse_head(head: bytes) -> tuple[str, str, list[tuple[str, str]]]:
    """Method, request target and header pairs of a serialised HTTP/1.1 request head."""
    lines = head.split(b"\r\n")
    method, target, _version = lines[0].split(b" ", 2)
    headers = []
    for line in lines[1:]:
        if not line:
            break
        name, _, value = line.partition(b":")
        headers.append((name.decode("latin-1"), value.strip().decode("latin-1")))
    return method.decode("ascii"), target.decode("latin-1"), headers


def _url(origin: Origin, target: str) -> yarl.URL:
    path, _, query = target.partition("?")
    host = f"[{origin.host}]" if ":" in origin.host else origin.host
    scheme = "https" if origin.tls else "http"
    return yarl.URL.build(
        scheme=scheme, host=host, port=origin.port, path=path, query_string=query, encoded=True
    )


class _Response:
    """An aiohttp response behind ``dataplane.upstream.transport.UpstreamResponse``."""

    def __init__(self, response: aiohttp.ClientResponse, timeout: float) -> None:
        self._response = response
        self.status = response.status
        self.headers = list(response.raw_headers)
        chunked = "chunked" in response.headers.get("Transfer-Encoding", "").lower()
        self.content_length = None if chunked else response.content_length
        self.content_type = response.headers.get("Content-Type", "").encode("latin-1")
        self._loop = asyncio.get_running_loop()
        self._timeout = timeout
        self._complete = False
        self._error: BaseException | None = None
        self._reading = False  # the reader waits inside aiohttp: its own read timeout applies
        self._seen = 0  # body bytes aiohttp had received at the last check
        self._last = self._loop.time()  # the last progress: a chunk taken, or bytes arriving
        self._timer: asyncio.TimerHandle | None = self._loop.call_at(self._last + timeout, self._check)

    def _check(self) -> None:
        """A reader that takes nothing while nothing arrives makes no progress: after the time limit
        the response ends (aiohttp's own read timeout is off while its buffer is full)."""
        self._timer = None
        if self._complete or self._error is not None:
            return
        now = self._loop.time()
        received = self._response.content.total_bytes
        if self._reading or received != self._seen:
            self._seen = received
            self._last = now
        if now >= self._last + self._timeout:
            self._error = ReadTimeout(f"was cut off: nothing of its answer was taken for {self._timeout:g}s")
            self._response.close()
            return
        self._timer = self._loop.call_at(self._last + self._timeout, self._check)

    async def read(self, limit: int) -> bytes:
        if self.content_length is not None and self.content_length > limit:
            self.close()
            raise BodyTooLarge(limit)
        parts = []
        size = 0
        async for chunk in self.iter_chunks():
            size += len(chunk)
            if size > limit:
                self.close()
                raise BodyTooLarge(limit)
            parts.append(chunk)
        return b"".join(parts)

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        content = self._response.content
        while True:
            if self._error is not None:
                raise self._error
            self._reading = True
            try:
                chunk = await content.readany()
            except aiohttp.ClientError as exc:
                raise self._error or _body_error(exc, self._timeout) from exc
            except TimeoutError as exc:
                raise self._error or ReadTimeout(f"sent nothing for {self._timeout:g}s") from exc
            finally:
                self._reading = False
            self._last = self._loop.time()
            if not chunk:
                if self._error is not None:
                    raise self._error
                self._complete = True
                return
            yield chunk

    def release(self) -> None:
        self._stop()
        if self._complete:
            self._response.release()
        else:
            self._response.close()

    def close(self) -> None:
        self._stop()
        self._response.close()

    def _stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _body_error(exc: aiohttp.ClientError, timeout: float) -> Exception:
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return ReadTimeout(f"sent nothing for {timeout:g}s")
    return BrokenBody(str(exc) or type(exc).__name__)


class AiohttpUpstream:
    """``dataplane.upstream.transport.Transport`` on one aiohttp ClientSession."""

    def __init__(
        self,
        *,
        connect_timeout: float,
        max_connections: int,
        ssl_context: ssl.SSLContext | None = None,
        idle_expiry: float = 30.0,
    ) -> None:
        self._connect_timeout = connect_timeout
        self._max_connections = max_connections
        self._ssl = ssl_context
        self._idle_expiry = idle_expiry
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            limit_per_host=0,
            keepalive_timeout=self._idle_expiry,
            ssl=self._ssl if self._ssl is not None else ssl.create_default_context(),
        )
        session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=_SKIP_AUTO,
            timeout=aiohttp.ClientTimeout(total=None),
            read_bufsize=HIGH_WATER // 2,  # aiohttp pauses at twice this
        )
        # aiohttp sends an idempotent request again when its reused connection breaks, even after
        # writing it; the contract never re-sends a request that may have reached the backend.
        session._retry_connection = False
        self._session = session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self, backend_id: str, origin: Origin, head: bytes, body: bytes, progress_timeout: float
    ) -> _Response:
        if self._session is None:
            raise UpstreamError("the upstream client is not started")
        if origin.invalid:
            raise ConnectFailed(f"backend {backend_id} has an invalid URL: {origin.invalid}")
        method, target, headers = parse_head(head)
        limits = aiohttp.ClientTimeout(
            total=None,
            connect=progress_timeout,  # a free connection and the connection made, together
            sock_connect=min(self._connect_timeout, progress_timeout),
            sock_read=progress_timeout,
        )
        try:
            response = await self._session.request(
                method,
                _url(origin, target),
                headers=headers,
                data=body or None,
                allow_redirects=False,
                timeout=limits,
            )
        except aiohttp.ClientConnectorError as exc:
            raise connect_failed(backend_id, exc) from exc
        except aiohttp.ConnectionTimeoutError as exc:
            message = f"timed out connecting to backend {backend_id} (within {progress_timeout:g}s)"
            raise ConnectTimedOut(message) from exc
        except aiohttp.ServerDisconnectedError as exc:
            raise upstream_error(backend_id, Disconnected(str(exc))) from exc
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            silence = ReadTimeout(f"did not answer within {progress_timeout:g}s")
            raise upstream_error(backend_id, silence) from exc
        except aiohttp.ClientResponseError as exc:
            raise upstream_error(backend_id, BadResponse(exc.message)) from exc
        except aiohttp.ClientError as exc:
            raise upstream_error(backend_id, OSError(str(exc) or type(exc).__name__)) from exc
        return _Response(response, progress_timeout)
