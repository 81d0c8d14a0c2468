"""The upstream client over real loopback sockets, against a scripted raw HTTP server.

Each test's server answers with exact bytes, so the client meets the shapes a backend may send
(keep-alive, chunked, until-close bodies, interim answers, garbage, silence, dropped connections).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dataplane.http1 import Response
from dataplane.origin import Origin, prepare
from dataplane.upstream import ConnectFailed, ConnectTimedOut, Upstream, upstream_errors
from shared.errors import UpstreamProtocolError, UpstreamTimeout

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Server"], Awaitable[None]]

OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'


@dataclass
class Server:
    url: str = ""
    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    requests: list[bytes] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)


async def read_request(reader: asyncio.StreamReader, server: Server) -> bool:
    """Read one request (head and Content-Length body); False at the end of the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return False
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    server.requests.append(head + await reader.readexactly(length))
    return True


@contextlib.asynccontextmanager
async def scripted(script: Script) -> AsyncIterator[Server]:
    server = Server()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server.connections += 1
        server.open_now += 1
        server.most_open = max(server.most_open, server.open_now)
        try:
            await script(reader, writer, server)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            server.open_now -= 1
            writer.close()
            server.closed.set()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    server.url = f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
    try:
        yield server
    finally:
        listener.close()
        await listener.wait_closed()


async def keep_alive_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
    while await read_request(reader, server):
        writer.write(OK)
        await writer.drain()


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    client = Upstream(connect_timeout=2.0, max_connections=8)
    await client.start()
    try:
        yield client
    finally:
        await client.close()


def _head(url: str, body: bytes, path: bytes = b"/api/chat") -> tuple[Origin, bytes]:
    backend = prepare(url, [("X-Team", "blue")], "")
    head = b"POST %s HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n" % (path, backend.fixed_lines, len(body))
    return backend.origin, head


async def _call(
    upstream: Upstream, url: str, body: bytes = b'{"model":"m"}', read_timeout: float = 5.0
) -> Response:
    origin, head = _head(url, body)
    with upstream_errors("b1"):
        return await upstream.request("b1", origin, head, body, read_timeout)


async def test_requests_are_sent_as_written_and_connections_kept_alive(upstream: Upstream) -> None:
    async with scripted(keep_alive_ok) as server:
        for _ in range(3):
            response = await _call(upstream, server.url)
            assert response.status == 200
            assert (b"Content-Type", b"application/json") in response.headers
            assert await response.read() == b'{"ok":true}'
            response.release()
    assert server.connections == 1
    host = server.url.removeprefix("http://").encode()
    assert server.requests[0] == (
        b"POST /api/chat HTTP/1.1\r\nHost: " + host + b"\r\nX-Team: blue\r\nContent-Length: 13\r\n\r\n"
        b'{"model":"m"}'
    )


async def test_chunks_are_handed_over_as_they_arrive(upstream: Upstream) -> None:
    go_on = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await read_request(reader, server)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        writer.write(b"6\r\nfirst\n\r\n")
        await writer.drain()
        await go_on.wait()
        writer.write(b"7\r\nsecond\n\r\n0\r\n\r\n")
        await writer.drain()
        await read_request(reader, server)  # stays open for another request

    async with scripted(script) as server:
        response = await _call(upstream, server.url)
        assert response.content_length is None and response.content_type == b"application/x-ndjson"
        chunks = response.iter_chunks()
        assert await anext(chunks) == b"first\n"  # before the backend sent the rest
        go_on.set()
        assert [c async for c in chunks] == [b"second\n"]
        assert response.complete
        response.release()
        assert server.connections == 1


async def test_a_body_without_length_ends_with_the_connection(upstream: Upstream) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await read_request(reader, server)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
        await writer.drain()

    async with scripted(script) as server:
        response = await _call(upstream, server.url)
        assert await response.read() == b"all of it"
        response.release()
        response = await _call(upstream, server.url)  # a new connection: the old one is gone
        assert await response.read() == b"all of it"
        response.release()
    assert server.connections == 2


async def test_interim_answers_are_skipped(upstream: Upstream) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await read_request(reader, server)
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n" + OK)
        await writer.drain()

    async with scripted(script) as server:
        response = await _call(upstream, server.url)
        assert response.status == 200
        assert await response.read() == b'{"ok":true}'
        response.release()


async def test_silence_is_a_timeout(upstream: Upstream) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await read_request(reader, server)
        await asyncio.sleep(5)

    async with scripted(script) as server:
        with pytest.raises(UpstreamTimeout, match="b1 did not answer in time"):
            await _call(upstream, server.url, read_timeout=0.2)


async def test_silence_in_the_middle_of_a_body_is_a_timeout(upstream: Upstream) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await read_request(reader, server)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n")
        await writer.drain()
        await asyncio.sleep(5)

    async with scripted(script) as server:
        response = await _call(upstream, server.url, read_timeout=0.2)
        with pytest.raises(UpstreamTimeout), upstream_errors("b1"):
            [c async for c in response.iter_chunks()]
        response.close()


async def test_a_kept_alive_connection_takes_each_requests_own_timeout(upstream: Upstream) -> None:
    async def answer_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await read_request(reader, server)
        writer.write(OK)
        await writer.drain()
        await read_request(reader, server)
        await asyncio.sleep(60)  # the second request gets no answer

    async with scripted(answer_once) as server:
        response = await _call(upstream, server.url, read_timeout=30.0)
        await response.read()
        response.release()
        async with asyncio.timeout(10):  # far below the first request's 30 s
            with pytest.raises(UpstreamTimeout):
                await _call(upstream, server.url, read_timeout=0.2)
        assert server.connections == 1


async def test_dropped_connections_and_garbage_are_protocol_errors(upstream: Upstream) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await read_request(reader, server)

    async def half_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await read_request(reader, server)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
        await writer.drain()

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await read_request(reader, server)
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    async with scripted(hang_up) as server:
        with pytest.raises(UpstreamProtocolError, match="b1 closed the connection"):
            await _call(upstream, server.url)
    async with scripted(half_body) as server:
        response = await _call(upstream, server.url)
        with pytest.raises(UpstreamProtocolError, match="broken body"), upstream_errors("b1"):
            await response.read()
        response.close()
    async with scripted(garbage) as server:
        with pytest.raises(UpstreamProtocolError, match="unreadable answer"):
            await _call(upstream, server.url)


async def test_a_kept_alive_connection_dropped_on_reuse_is_retried_on_a_fresh_one(
    upstream: Upstream,
) -> None:
    """Servers close idle connections; one that closes just as a request arrives answers nothing,
    so the request goes again on a new connection instead of failing."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        if server.connections == 1:
            await read_request(reader, server)
            writer.write(OK)
            await writer.drain()
            await read_request(reader, server)  # the reused connection: close without answering
            return
        await keep_alive_ok(reader, writer, server)

    async with scripted(script) as server:
        for _ in range(2):
            response = await _call(upstream, server.url)
            assert response.status == 200
            assert await response.read() == b'{"ok":true}'
            response.release()
    assert server.connections == 2
    assert len(server.requests) == 3  # the second request was sent twice: dropped, then answered


async def test_no_connection_means_connect_failed(upstream: Upstream) -> None:
    async with scripted(keep_alive_ok) as server:
        url = server.url
    with pytest.raises(ConnectFailed, match="cannot connect to backend b1"):
        await _call(upstream, url)
    with pytest.raises(ConnectFailed, match="invalid URL"):
        await _call(upstream, "ftp://nowhere")


async def test_closing_a_response_drops_its_connection(upstream: Upstream) -> None:
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await read_request(reader, server)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        while True:
            writer.write(b"1\r\nx\r\n")
            await writer.drain()
            await asyncio.sleep(0.01)

    async with scripted(endless) as server:
        response = await _call(upstream, server.url)
        assert await anext(response.iter_chunks())
        response.close()
        await asyncio.wait_for(server.closed.wait(), 5)


async def test_connections_stay_within_the_limit() -> None:
    client = Upstream(connect_timeout=2.0, max_connections=2)
    await client.start()

    async def slow_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        while await read_request(reader, server):
            await asyncio.sleep(0.05)
            writer.write(OK)
            await writer.drain()

    async def one(url: str) -> bytes:
        response = await _call(client, url)
        try:
            return await response.read()
        finally:
            response.release()

    try:
        async with scripted(slow_ok) as server:
            bodies = await asyncio.gather(*(one(server.url) for _ in range(6)))
    finally:
        await client.close()
    assert bodies == [b'{"ok":true}'] * 6
    assert server.most_open == 2


def test_the_client_runs_on_uvloop_as_in_production() -> None:
    """uvloop's transports differ from asyncio's (the data plane process runs on uvloop)."""
    uvloop = pytest.importorskip("uvloop")

    async def main() -> tuple[list[bytes], int]:
        client = Upstream(connect_timeout=2.0, max_connections=8)
        await client.start()
        bodies = []
        try:
            async with scripted(keep_alive_ok) as server:
                for _ in range(3):
                    response = await _call(client, server.url)
                    bodies.extend([c async for c in response.iter_chunks()])
                    response.release()
        finally:
            await client.close()
        return bodies, server.connections

    bodies, connections = uvloop.run(main())
    assert bodies == [b'{"ok":true}'] * 3
    assert connections == 1


async def test_a_connect_timeout_gives_its_slot_back() -> None:
    """A listener whose accept queue is full never completes the handshake (loopback only)."""
    client = Upstream(connect_timeout=0.2, max_connections=1)
    await client.start()
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    fillers = []
    for _ in range(4):  # fill the accept queue; further handshakes go unanswered
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(full.getsockname())
        fillers.append(filler)
    try:
        with pytest.raises(ConnectTimedOut, match="timed out connecting to backend b1"):
            await _call(client, f"http://127.0.0.1:{full.getsockname()[1]}")
        async with scripted(keep_alive_ok) as server:
            response = await _call(client, server.url)  # the only slot is free again
            assert await response.read() == b'{"ok":true}'
            response.release()
    finally:
        await client.close()
        for s in [*fillers, full]:
            s.close()


async def test_bytes_after_the_answer_make_the_connection_unusable() -> None:
    async def two_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        while await read_request(reader, server):
            writer.write(OK + OK)  # one request, two answers in one write
            await writer.drain()

    client = Upstream(connect_timeout=2.0, max_connections=1)
    await client.start()
    try:
        async with scripted(two_answers) as server, asyncio.timeout(10):
            for _ in range(2):  # the second needs the only slot back: the first connection is closed
                response = await _call(client, server.url)
                assert await response.read() == b'{"ok":true}'
                response.release()
    finally:
        await client.close()
    assert server.connections == 2


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for localhost and its key, made by the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_https_backends_are_verified(self_signed: tuple[Path, Path]) -> None:
    cert, key = self_signed
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(cert, key)
    server = Server()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server.connections += 1
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            await keep_alive_ok(reader, writer, server)
        writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_side)
    url = f"https://localhost:{listener.sockets[0].getsockname()[1]}"
    default = Upstream(connect_timeout=2.0, max_connections=2)
    trusting = Upstream(
        connect_timeout=2.0, max_connections=2, ssl_context=ssl.create_default_context(cafile=str(cert))
    )
    await default.start()
    await trusting.start()
    try:
        with pytest.raises(ConnectFailed, match="certificate verify failed"):
            await _call(default, url)  # a self-signed certificate is not trusted by default
        for _ in range(2):
            response = await _call(trusting, url)
            assert await response.read() == b'{"ok":true}'
            response.release()
    finally:
        await default.close()
        await trusting.close()
        listener.close()
        await listener.wait_closed()
    assert server.requests[-1].startswith(b"POST /api/chat HTTP/1.1\r\nHost: localhost:")
    assert len(server.requests) == 2
    assert server.connections == 1  # kept alive for both (the refused handshake never got this far)
