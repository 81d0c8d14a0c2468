"""The upstream client contract (``dataplane.upstream.transport``), run against every implementation.

Each test's backend is a raw asyncio server scripted byte by byte (``servers``), so the clients meet
what a backend may do: keep-alive, every body framing and size class, interim answers, slow and
silent servers, dropped connections, garbage, TLS. Time limits are short and every wait is bounded,
so a client that hangs fails the test instead of holding it up; no assertion is about speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import trustme

from dataplane.upstream.transport import (
    HIGH_WATER,
    AnswerTooLarge,
    ConnectFailed,
    RequestNotSent,
    Transport,
    UpstreamResponse,
    upstream_errors,
)
from shared.errors import UpstreamError, UpstreamProtocolError, UpstreamTimeout
from tests.dataplane.transport.conftest import MakeTransport
from tests.dataplane.transport.servers import (
    OK,
    Server,
    body_of,
    full_backlog,
    keep_alive_ok,
    read_request,
    request_head,
    scripted,
    write_body,
)

KiB, MiB = 1024, 1024 * 1024
SIZES = [0, 1, 64 * KiB, HIGH_WATER - 1, HIGH_WATER, HIGH_WATER + 1, 4 * MiB, 32 * MiB]
FRAMINGS = ["sized", "chunked", "eof"]


async def call(
    transport: Transport,
    url: str,
    body: bytes = b'{"model":"m"}',
    limit: float = 5.0,
    method: bytes = b"POST",
) -> UpstreamResponse:
    origin, head = request_head(url, body, method)
    return await transport.request("b1", origin, head, body, limit)


async def read_whole(response: UpstreamResponse, limit: int = 64 * MiB) -> bytes:
    with upstream_errors("b1"):
        return await response.read(limit)


async def chunks_of(response: UpstreamResponse) -> list[bytes]:
    with upstream_errors("b1"):
        return [chunk async for chunk in response.iter_chunks()]


@contextlib.contextmanager
def took(at_most: float) -> Iterator[None]:
    """A liveness bound, not a speed limit: the block must end at all (well within ``at_most``)."""
    start = time.monotonic()
    yield
    assert time.monotonic() - start < at_most


# Requests, keep-alive and bodies


async def test_requests_go_as_written_and_connections_are_kept_alive(transport: Transport) -> None:
    async with scripted(keep_alive_ok) as server:
        for _ in range(3):
            response = await call(transport, server.url)
            assert response.status == 200
            assert (b"Content-Type", b"application/json") in response.headers
            assert response.content_type == b"application/json"
            assert response.content_length == 11
            assert await read_whole(response) == b'{"ok":true}'
            response.release()
    assert server.connections == 1
    host = server.url.removeprefix("http://").encode()
    lines = server.requests[0].split(b"\r\n")
    assert lines[0] == b"POST /api/chat HTTP/1.1"
    # Exactly the head's headers reach the backend: none added, none changed (order may differ).
    assert sorted(lines[1:-2]) == sorted([b"Host: " + host, b"X-Team: blue", b"Content-Length: 13"])
    assert server.requests[0].endswith(b'\r\n\r\n{"model":"m"}')


@pytest.mark.parametrize("framing", FRAMINGS)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("how", ["read", "iter_chunks"])
async def test_bodies_of_every_size_and_framing_arrive_whole(
    transport: Transport, framing: str, size: int, how: str
) -> None:
    body = body_of(size)

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        while await read_request(reader, server):
            await write_body(writer, server, body, framing)
            if framing == "eof":
                return

    async with scripted(script) as server, asyncio.timeout(60):
        for _ in range(2):  # the second on the kept-alive connection (a new one after "eof")
            response = await call(transport, server.url)
            assert response.content_length == (size if framing == "sized" else None)
            if how == "read":
                received = await read_whole(response)
            else:
                chunks = await chunks_of(response)
                assert all(chunks)  # no empty chunk is handed over
                received = b"".join(chunks)
            assert received == body
            response.release()
    assert server.connections == (2 if framing == "eof" else 1)


async def test_interim_answers_are_skipped(transport: Transport) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        while await read_request(reader, server):
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n")
            await writer.drain()
            writer.write(OK)
            await writer.drain()

    async with scripted(script) as server:
        for _ in range(2):
            response = await call(transport, server.url)
            assert response.status == 200
            assert (b"Link", b"</x>") not in response.headers
            assert await read_whole(response) == b'{"ok":true}'
            response.release()
    assert server.connections == 1


async def test_chunks_are_handed_over_as_they_arrive(transport: Transport) -> None:
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
        await read_request(reader, server)

    async with scripted(script) as server, asyncio.timeout(10):
        response = await call(transport, server.url)
        assert response.content_length is None and response.content_type == b"application/x-ndjson"
        chunks = response.iter_chunks()
        assert await anext(chunks) == b"first\n"  # before the backend sent the rest
        go_on.set()
        assert [c async for c in chunks] == [b"second\n"]
        response.release()


# Reading whole, with a limit


async def test_read_over_its_limit_fails_and_drops_the_connection(transport: Transport) -> None:
    body = body_of(HIGH_WATER * 3)

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        while await read_request(reader, server):
            framing = "sized" if len(server.requests) == 1 else "chunked"
            await write_body(writer, server, body, framing)

    async with scripted(script) as server, asyncio.timeout(10):
        for _ in ("sized", "chunked"):
            response = await call(transport, server.url)
            with pytest.raises(AnswerTooLarge, match=f"larger than {HIGH_WATER} bytes"):
                await read_whole(response, limit=HIGH_WATER)
            response.close()
            await server.closed.wait()  # the connection is dropped, not left to drain
            server.closed.clear()
        response = await call(transport, server.url)  # exactly at the limit is fine
        assert await read_whole(response, limit=len(body)) == body
        response.release()
    assert server.connections == 3


# Backpressure


async def test_a_slow_reader_holds_the_backend_back_with_bounded_memory(transport: Transport) -> None:
    body = body_of(64 * MiB)
    sizes: list[int] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await read_request(reader, server)
        await write_body(writer, server, body, "chunked")

    async with scripted(script) as server, asyncio.timeout(60):
        response = await call(transport, server.url, limit=30.0)
        chunks = response.iter_chunks()
        received = [await anext(chunks)]
        await asyncio.sleep(1.0)  # the reader takes nothing: the backend's writes must block
        stalled_at = server.written
        await asyncio.sleep(0.5)
        assert server.written == stalled_at  # it stopped, and not because it was done
        # What it wrote fits the client's buffer and the kernel's socket buffers, not the whole body.
        assert stalled_at < 24 * MiB
        async for chunk in chunks:
            sizes.append(len(chunk))
            received.append(chunk)
        response.release()
    assert b"".join(received) == body
    assert max(sizes) <= 4 * MiB  # a chunk is what was buffered, never the whole body


async def test_a_slow_steady_reader_of_a_paused_answer_is_not_cut_off(transport: Transport) -> None:
    """Taking a chunk is progress: a paused answer read slowly finishes however long it takes."""
    body = body_of(16 * MiB)

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await read_request(reader, server)
        await write_body(writer, server, body, "sized")

    async with scripted(script) as server, asyncio.timeout(60):
        response = await call(transport, server.url, limit=0.5)
        received = []
        started = time.monotonic()
        async for chunk in response.iter_chunks():
            received.append(chunk)
            if time.monotonic() - started < 1.5:
                await asyncio.sleep(0.2)  # well under the limit each time, over it in all
        response.release()
    assert b"".join(received) == body


async def test_a_long_answer_that_keeps_coming_is_not_cut_off(transport: Transport) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await read_request(reader, server)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(12):
            writer.write(b"1\r\nx\r\n")
            await writer.drain()
            await asyncio.sleep(0.1)
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async with scripted(script) as server, asyncio.timeout(10):
        response = await call(transport, server.url, limit=0.5)  # the whole answer takes 1.2 s
        assert b"".join(await chunks_of(response)) == b"x" * 12
        response.release()


# The time limit in every state


@pytest.mark.parametrize(("connect_timeout", "limit"), [(0.3, 30.0), (30.0, 0.3)])
async def test_a_connect_that_hangs_ends_at_the_shorter_of_both_limits(
    make_transport: MakeTransport, connect_timeout: float, limit: float
) -> None:
    transport = await make_transport(connect_timeout=connect_timeout, max_connections=1)
    with full_backlog() as url, took(10), pytest.raises(RequestNotSent) as caught:
        await call(transport, url, limit=limit)
    assert isinstance(caught.value, UpstreamTimeout)
    async with scripted(keep_alive_ok) as server:
        response = await call(transport, server.url)  # the only slot is free again
        assert await read_whole(response) == b'{"ok":true}'
        response.release()


async def test_no_answer_within_the_limit_is_a_timeout(transport: Transport) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await read_request(reader, server)
        await asyncio.sleep(30)

    async with scripted(script) as server, asyncio.timeout(10):
        with pytest.raises(UpstreamTimeout, match=r"b1 did not answer within 0\.3s") as caught:
            await call(transport, server.url, limit=0.3)
        assert not isinstance(caught.value, RequestNotSent)  # it was sent: it may be running


async def test_silence_in_the_middle_of_a_body_is_a_timeout(transport: Transport) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await read_request(reader, server)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n")
        await writer.drain()
        await asyncio.sleep(30)

    async with scripted(script) as server, asyncio.timeout(10):
        response = await call(transport, server.url, limit=0.3)
        with pytest.raises(UpstreamTimeout):
            await chunks_of(response)
        response.close()
        response = await call(transport, server.url, limit=0.3)
        with pytest.raises(UpstreamTimeout):
            await read_whole(response)
        response.close()


async def test_a_paused_answer_nobody_takes_ends_at_the_limit(transport: Transport) -> None:
    """Reading pauses for a reader that takes nothing; after the limit the connection is dropped
    (the backend notices and stops) and the reader, once back, gets the timeout."""
    body = body_of(64 * MiB)

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await read_request(reader, server)
        await write_body(writer, server, body, "chunked")

    async with scripted(script) as server, asyncio.timeout(30):
        response = await call(transport, server.url, limit=0.5)
        chunks = response.iter_chunks()
        received = len(await anext(chunks))
        with took(10):
            await server.closed.wait()  # dropped by the client while the reader took nothing
        with (
            pytest.raises(UpstreamTimeout, match=r"nothing of its answer was taken for 0\.5s"),
            upstream_errors("b1"),
        ):
            async for chunk in chunks:
                received += len(chunk)
        response.close()
    assert received < len(body)


async def test_a_kept_alive_connection_takes_each_requests_own_limit(transport: Transport) -> None:
    async def answer_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await read_request(reader, server)
        writer.write(OK)
        await writer.drain()
        await read_request(reader, server)
        await asyncio.sleep(30)  # the second request gets no answer

    async with scripted(answer_once) as server, asyncio.timeout(10):
        response = await call(transport, server.url, limit=60.0)
        await read_whole(response)
        response.release()
        with pytest.raises(UpstreamTimeout):
            await call(transport, server.url, limit=0.3)  # far below the first request's 60 s
    assert server.connections == 1


# Never sent twice


async def test_a_connection_the_backend_closed_while_idle_is_replaced(transport: Transport) -> None:
    """The backend closed the kept-alive connection before the next request was written: that
    request goes on a fresh connection, once."""

    async def answer_then_close(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        await read_request(reader, server)
        writer.write(OK)  # keep-alive by HTTP/1.1's default, then closed anyway
        await writer.drain()

    async with scripted(answer_then_close) as server, asyncio.timeout(10):
        for _ in range(2):
            response = await call(transport, server.url)
            assert await read_whole(response) == b'{"ok":true}'
            response.release()
            await server.closed.wait()
            server.closed.clear()
            await asyncio.sleep(0.1)  # the client sees the end of the connection
    assert server.connections == 2
    assert len(server.requests) == 2


@pytest.mark.parametrize("method", [b"POST", b"GET"])
async def test_a_request_that_may_have_reached_the_backend_is_never_sent_again(
    transport: Transport, method: bytes
) -> None:
    """The backend read the request on a reused connection, then closed it without an answer: the
    error surfaces, and the request is not sent again (not even an idempotent one)."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await read_request(reader, server)
        writer.write(OK)
        await writer.drain()
        await read_request(reader, server)  # the second request: read, then the connection closes

    async with scripted(script) as server, asyncio.timeout(10):
        response = await call(transport, server.url, method=method)
        assert await read_whole(response) == b'{"ok":true}'
        response.release()
        with pytest.raises(UpstreamError) as caught:
            await call(transport, server.url, method=method)
        assert not isinstance(caught.value, RequestNotSent)
        await asyncio.sleep(0.2)  # time for a resend to arrive, if there were one
    assert len(server.requests) == 2
    assert server.connections == 1


async def test_a_backend_that_hangs_up_on_a_fresh_connection_is_an_error(transport: Transport) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await read_request(reader, server)

    async with scripted(hang_up) as server, asyncio.timeout(10):
        with pytest.raises(UpstreamProtocolError, match="b1 closed the connection"):
            await call(transport, server.url)
        await asyncio.sleep(0.2)
    assert len(server.requests) == 1


# Pool limits


async def test_requests_in_flight_stay_within_the_connection_limit(make_transport: MakeTransport) -> None:
    transport = await make_transport(max_connections=2)

    async def slow_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        while await read_request(reader, server):
            await asyncio.sleep(0.05)
            writer.write(OK)
            await writer.drain()

    async def one(url: str) -> bytes:
        response = await call(transport, url)
        try:
            return await read_whole(response)
        finally:
            response.release()

    async with scripted(slow_ok) as server, asyncio.timeout(10):
        bodies = await asyncio.gather(*(one(server.url) for _ in range(8)))  # waiters are woken
    assert bodies == [b'{"ok":true}'] * 8
    assert server.most_open == 2


async def test_waiting_for_a_free_connection_ends_at_the_limit(make_transport: MakeTransport) -> None:
    transport = await make_transport(max_connections=1)
    finish = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await read_request(reader, server)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n")
        await writer.drain()
        await finish.wait()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        await keep_alive_ok(reader, writer, server)

    async with scripted(script) as server, asyncio.timeout(10):
        held = await call(transport, server.url)  # in the middle of its body: the only slot is taken
        with took(5), pytest.raises(RequestNotSent) as caught:
            await call(transport, server.url, limit=0.3)
        assert isinstance(caught.value, UpstreamTimeout)
        finish.set()
        assert await read_whole(held) == b"hi"
        held.release()
        response = await call(transport, server.url)
        assert await read_whole(response) == b'{"ok":true}'
        response.release()
    assert len(server.requests) == 2  # the one that waited in vain never went out
    assert server.connections == 1


async def test_idle_connections_expire(make_transport: MakeTransport) -> None:
    transport = await make_transport(idle_expiry=0.3)
    async with scripted(keep_alive_ok) as server, asyncio.timeout(10):
        for pause in (0.0, 0.0, 1.0):
            await asyncio.sleep(pause)
            response = await call(transport, server.url)
            await read_whole(response)
            response.release()
    assert server.connections == 2  # reused at once, not after it expired


async def test_idle_connections_elsewhere_give_way(make_transport: MakeTransport, client_kind: str) -> None:
    transport = await make_transport(max_connections=2)

    async def slow_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        while await read_request(reader, server):
            await asyncio.sleep(0.05)
            writer.write(OK)
            await writer.drain()

    async def one(url: str) -> None:
        response = await call(transport, url)
        await read_whole(response)
        response.release()

    async with scripted(slow_ok) as first, scripted(keep_alive_ok) as second, asyncio.timeout(10):
        await asyncio.gather(one(first.url), one(first.url))  # two idle connections to the first
        with took(5):
            await one(second.url)  # does not wait for the first's idle ones
        if client_kind == "builtin":  # which counts idle connections in its limit
            await asyncio.sleep(0.1)
            assert first.open_now == 1  # the least recently used one was closed
    assert second.connections == 1


# Broken answers


async def test_broken_bodies_and_garbage_are_protocol_errors(transport: Transport) -> None:
    async def half_sized(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await read_request(reader, server)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
        await writer.drain()

    async def half_chunked(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        await read_request(reader, server)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nonly this\r\n")
        await writer.drain()

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await read_request(reader, server)
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    async def bad_status(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await read_request(reader, server)
        writer.write(b"HTTP/1.1 2x0 Okay\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    async with asyncio.timeout(10):
        for script in (half_sized, half_chunked):
            async with scripted(script) as server:
                response = await call(transport, server.url)
                with pytest.raises(UpstreamProtocolError, match="broken body"):
                    await read_whole(response)
                response.close()
                response = await call(transport, server.url)
                with pytest.raises(UpstreamProtocolError, match="broken body"):
                    await chunks_of(response)
                response.close()
        for script in (garbage, bad_status):
            async with scripted(script) as server:
                with pytest.raises(UpstreamProtocolError, match="unreadable answer"):
                    await call(transport, server.url)


async def test_no_connection_means_connect_failed(transport: Transport) -> None:
    async with scripted(keep_alive_ok) as server:
        url = server.url
    with pytest.raises(ConnectFailed, match="cannot connect to backend b1"):
        await call(transport, url)
    with pytest.raises(ConnectFailed, match="invalid URL"):
        await call(transport, "ftp://nowhere")


async def test_closing_a_response_drops_its_connection(transport: Transport) -> None:
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await read_request(reader, server)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        while True:
            writer.write(b"1\r\nx\r\n")
            await writer.drain()
            await asyncio.sleep(0.01)

    async with scripted(endless) as server, asyncio.timeout(10):
        response = await call(transport, server.url)
        assert await anext(response.iter_chunks())
        response.close()
        await server.closed.wait()


# TLS


@pytest.fixture(scope="module")
def test_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_server(test_ca: trustme.CA) -> AsyncIterator[Server]:
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    test_ca.issue_cert("localhost").configure_cert(server_side)
    async with scripted(keep_alive_ok, tls=server_side, host="localhost") as server:
        yield server


async def test_https_backends_are_verified(
    make_transport: MakeTransport, tls_server: Server, test_ca: trustme.CA
) -> None:
    default = await make_transport()
    trusting_context = ssl.create_default_context()
    test_ca.configure_trust(trusting_context)
    trusting = await make_transport(ssl_context=trusting_context)
    async with asyncio.timeout(10):
        with pytest.raises(ConnectFailed, match="TLS certificate failed verification") as refused:
            await call(default, tls_server.url)  # a private CA is not trusted by default
        assert "certificate verify failed" in refused.value.detail  # the why, for the log
        for _ in range(2):
            response = await call(trusting, tls_server.url)
            assert await read_whole(response) == b'{"ok":true}'
            response.release()
    assert tls_server.requests[-1].startswith(b"POST /api/chat HTTP/1.1\r\n")
    assert b"Host: localhost:" in tls_server.requests[-1]
    assert len(tls_server.requests) == 2  # the refused handshake sent nothing


async def test_bytes_after_the_answer_make_the_connection_unusable(make_transport: MakeTransport) -> None:
    async def two_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        while await read_request(reader, server):
            writer.write(OK + OK)  # one request, two answers in one write
            await writer.drain()

    transport = await make_transport(max_connections=1)
    async with scripted(two_answers) as server, asyncio.timeout(10):
        for _ in range(2):  # the second needs the only slot back: the first connection is closed
            response = await call(transport, server.url)
            assert await read_whole(response) == b'{"ok":true}'
            response.release()
    assert server.connections == 2
