"""A lean HTTP/1.1 client for one backend's probes and model-list reads, over one kept-alive connection.

A probe through a general client (httpx) cost ~690 µs of CPU; at a thousand backends that was a third
of a core. Probes and listings only ever need a GET or HEAD, a status and a bounded body, so this
client writes the request itself and parses the answer with asyncio streams: ~45 µs a probe.

Every request is bounded: one timeout covers connecting, sending and reading; the status line and the
headers are capped; a body is read up to ``limit`` bytes (Content-Length, chunked, or until the
connection closes). After any error the connection is dropped and the next request opens a new one;
a kept-alive connection the backend closed while idle is retried once on a fresh one.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from urllib.parse import urlsplit

__all__ = ["BodyTooLarge", "ProbeClient", "ProbeError", "Reply"]

_MAX_LINE = 16 * 1024  # the status line or one header line
_MAX_HEADERS = 100
_MAX_INTERIM = 5  # 1xx answers skipped before the real one


class ProbeError(Exception):
    """The backend could not be reached or did not answer in HTTP/1.1 as it should."""


class ProbeTimeout(ProbeError):
    pass


class BodyTooLarge(ValueError):
    """The body is larger than the caller's bound (it is not read)."""


class _Stale(ProbeError):
    """A reused connection was closed before any of the answer came."""


class Reply:
    """A status and the body read (empty when not read)."""

    __slots__ = ("body", "status")

    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self.body = body


class ProbeClient:
    """Requests to one backend over one kept-alive connection; not for concurrent use (one per loop)."""

    def __init__(self, base_url: str, ssl_context: ssl.SSLContext | None) -> None:
        parts = urlsplit(base_url)
        if parts.hostname is None:
            raise ValueError(f"no host in {base_url!r}")
        self._tls = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._tls else 80)
        self._ssl = (ssl_context or ssl.create_default_context()) if self._tls else None
        default = 443 if self._tls else 80
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._authority = host if self._port == default else f"{host}:{self._port}"
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(
        self,
        method: str,
        target: str,
        headers: tuple[tuple[str, str], ...],
        *,
        within: float,
        limit: int,
        oversized_ok: bool = False,
    ) -> Reply:
        """``method target`` (a path with its query); the body up to ``limit`` bytes. Beyond it:
        BodyTooLarge, or with ``oversized_ok`` the status with an empty body (a probe only needs the
        status). ProbeError (ProbeTimeout) when the backend cannot be reached or answers badly;
        UnicodeError / ValueError for a header or path that cannot be sent."""
        head = _head(method, target, self._authority, headers)
        try:
            async with asyncio.timeout(within):
                reused = self._writer is not None
                try:
                    return await self._exchange(head, method, limit, oversized_ok)
                except _Stale:
                    if not reused:
                        raise
                    return await self._exchange(head, method, limit, oversized_ok)
        except TimeoutError:
            self.close()
            raise ProbeTimeout(f"no answer within {within:g} s") from None
        except BaseException:
            self.close()
            raise

    async def _exchange(self, head: bytes, method: str, limit: int, oversized_ok: bool) -> Reply:
        reused = self._writer is not None
        if self._writer is None:
            await self._connect()
        reader, writer = self._reader, self._writer
        assert reader is not None and writer is not None
        try:
            writer.write(head)
            await writer.drain()
            line = await reader.readuntil(b"\r\n")
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            self.close()
            got = isinstance(exc, asyncio.IncompleteReadError) and exc.partial
            if reused and not got:
                raise _Stale("closed while idle") from None
            raise ProbeError("the connection closed before an answer") from None
        except asyncio.LimitOverrunError:
            raise ProbeError("status line too long") from None
        except OSError as exc:
            raise ProbeError(f"cannot send: {exc}") from None
        try:
            return await self._answer(reader, line, method, limit, oversized_ok)
        except asyncio.IncompleteReadError:
            raise ProbeError("the connection closed in the middle of an answer") from None
        except asyncio.LimitOverrunError:
            raise ProbeError(f"a header line longer than {_MAX_LINE} bytes") from None
        except ConnectionError as exc:
            raise ProbeError(f"connection lost: {exc}") from None

    async def _answer(
        self, reader: asyncio.StreamReader, line: bytes, method: str, limit: int, oversized_ok: bool
    ) -> Reply:
        for _ in range(_MAX_INTERIM):
            version, status = _status(line)
            fields = await _fields(reader)
            if not 100 <= status < 200 or status == 101:
                break
            line = await reader.readuntil(b"\r\n")
        else:
            raise ProbeError("too many interim (1xx) answers")
        connection = fields.get(b"connection", b"").lower()
        keep = b"close" not in connection and (version == b"HTTP/1.1" or b"keep-alive" in connection)
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            body = b""
        elif b"chunked" in fields.get(b"transfer-encoding", b"").lower():
            body = await _chunked(reader, limit, oversized_ok)
            if body is None:
                self.close()
                return Reply(status, b"")
        elif (length := fields.get(b"content-length")) is not None:
            if not length.strip().isdigit():
                raise ProbeError(f"bad Content-Length {length[:40]!r}")
            size = int(length)
            if size > limit:
                self.close()
                if oversized_ok:
                    return Reply(status, b"")
                raise BodyTooLarge(f"answered {size} bytes, over {limit}")
            body = await reader.readexactly(size)
        else:  # delimited by the end of the connection
            body = await reader.read(limit + 1)
            while len(body) <= limit and (more := await reader.read(limit + 1 - len(body))):
                body += more
            keep = False
            if len(body) > limit:
                self.close()
                if oversized_ok:
                    return Reply(status, b"")
                raise BodyTooLarge(f"answered more than {limit} bytes")
        if not keep:
            self.close()
        return Reply(status, body)

    async def _connect(self) -> None:
        try:
            self._reader, self._writer = await asyncio.open_connection(
                self._host,
                self._port,
                ssl=self._ssl,
                server_hostname=self._host if self._tls else None,
                limit=_MAX_LINE,
            )
        except ssl.SSLError as exc:
            raise ProbeError(f"TLS: {exc}") from None
        except OSError as exc:
            raise ProbeError(f"cannot connect: {exc}" if str(exc) else "cannot connect") from None

    def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.close()


def _head(method: str, target: str, authority: str, headers: tuple[tuple[str, str], ...]) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {authority}"]
    given = set()
    for name, value in headers:
        if any(c in name or c in value for c in "\r\n\0"):
            raise ValueError(f"header {name!r} holds a line break")
        given.add(name.lower())
        lines.append(f"{name}: {value}")
    if "accept" not in given:
        lines.append("Accept: */*")
    if any(c in target for c in " \r\n\0"):
        raise ValueError(f"the path {target!r} holds a space or a line break")
    # ASCII only, as httpx sends (a UnicodeError names the header that cannot be sent).
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def _status(line: bytes) -> tuple[bytes, int]:
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit() or len(parts[1]) != 3:
        raise ProbeError(f"not an HTTP/1.x answer: {line[:60]!r}")
    return parts[0], int(parts[1])


async def _fields(reader: asyncio.StreamReader) -> dict[bytes, bytes]:
    fields: dict[bytes, bytes] = {}
    for _ in range(_MAX_HEADERS + 1):
        line = await reader.readuntil(b"\r\n")
        if line == b"\r\n":
            return fields
        name, sep, value = line.partition(b":")
        if not sep:
            raise ProbeError(f"a malformed header line {line[:60]!r}")
        key, value = name.strip().lower(), value.strip()
        if key == b"content-length" and fields.get(key, value) != value:
            raise ProbeError("conflicting Content-Length headers")
        known = fields.get(key)
        fields[key] = value if known is None or known == value else known + b", " + value
    raise ProbeError(f"more than {_MAX_HEADERS} header lines")


async def _chunked(reader: asyncio.StreamReader, limit: int, oversized_ok: bool) -> bytes | None:
    """A chunked body up to ``limit`` bytes; None (oversized_ok) or BodyTooLarge beyond."""
    body = bytearray()
    while True:
        size_line = (await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise ProbeError(f"bad chunk size {size_line[:20]!r}") from None
        if size < 0:
            raise ProbeError("bad chunk size")
        if size == 0:
            break
        if len(body) + size > limit:
            if oversized_ok:
                return None
            raise BodyTooLarge(f"answered more than {limit} bytes")
        body += await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise ProbeError("a chunk not ended by CRLF")
    for _ in range(_MAX_HEADERS + 1):  # trailers
        if await reader.readuntil(b"\r\n") == b"\r\n":
            return bytes(body)
    raise ProbeError("too many trailer lines")
