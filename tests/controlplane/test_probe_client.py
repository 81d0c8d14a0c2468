"""The lean probe client over real loopback HTTP: against the simulator, and against servers that
misbehave (oversized bodies, stalls, connections closed)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from controlplane.health.probe_client import BodyTooLarge, ProbeClient, ProbeError, ProbeTimeout
from ollamaflow.sim import running_sim

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[tuple[str, list[int]]]:
    """A raw TCP server on loopback; yields its URL and a list that counts accepted connections."""
    accepted: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", accepted
    finally:
        server.close()


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def answering(*answers: bytes, then_close: bool = False) -> Handler:
    """Answers each request on a connection with the next of ``answers``."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for answer in answers:
            await read_head(reader)
            writer.write(answer)
            await writer.drain()
        if not then_close:
            await reader.read()

    return handler


async def test_probes_and_listings_of_the_simulator_share_one_kept_alive_connection() -> None:
    async with running_sim() as url:
        client = ProbeClient(url, None)
        try:
            probe = await client.request("GET", "/", (), within=5, limit=1024)
            assert probe.status == 200 and probe.body
            writer = client._writer
            tags = await client.request("GET", "/api/tags", (("X-Extra", "1"),), within=5, limit=1 << 20)
            assert tags.status == 200 and b'"models"' in tags.body
            head = await client.request("HEAD", "/", (), within=5, limit=1024)
            assert head.status == 200 and head.body == b""
            missing = await client.request("GET", "/no/such/path?x=1", (), within=5, limit=1 << 20)
            assert missing.status == 404
            assert client._writer is writer  # the same connection throughout
        finally:
            client.close()


async def test_a_repeated_content_length_of_the_same_value_is_one() -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok"
    async with serving(answering(answer)) as (url, _):
        client = ProbeClient(url, None)
        assert (await client.request("GET", "/", (), within=5, limit=100)).body == b"ok"
        client.close()


async def test_chunked_and_close_delimited_bodies_are_read() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nT: 1\r\n\r\n"
    )
    delimited = b"HTTP/1.0 200 OK\r\n\r\nuntil the end"
    async with serving(answering(chunked, delimited, then_close=True)) as (url, accepted):
        client = ProbeClient(url, None)
        assert (await client.request("GET", "/", (), within=5, limit=100)).body == b"hello world"
        assert (await client.request("GET", "/", (), within=5, limit=100)).body == b"until the end"
        assert client._writer is None  # a close-delimited body leaves no connection to reuse
        assert len(accepted) == 1


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 1000,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"400\r\n" + b"x" * 1024 + b"\r\n" * 50,
        b"HTTP/1.0 200 OK\r\n\r\n" + b"x" * 5000,
    ],
    ids=["content-length", "chunked", "until-close"],
)
async def test_an_oversized_body_is_refused_or_left_unread_for_a_probe(answer: bytes) -> None:
    async with serving(answering(answer, answer)) as (url, accepted):
        client = ProbeClient(url, None)
        with pytest.raises(BodyTooLarge):
            await client.request("GET", "/api/tags", (), within=5, limit=512)
        # A probe needs only the status: it is taken, the body is not read, the connection dropped.
        reply = await client.request("GET", "/", (), within=5, limit=512, oversized_ok=True)
        assert (reply.status, reply.body) == (200, b"")
        assert client._writer is None and len(accepted) == 2


async def test_a_stalled_backend_times_out_and_the_next_request_reconnects() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    calls: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        calls.append(1)
        await read_head(reader)
        if len(calls) == 1:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok")  # then nothing more
            await writer.drain()
            await asyncio.sleep(30)
        writer.write(ok)
        await writer.drain()
        await reader.read()

    async with serving(handler) as (url, accepted):
        client = ProbeClient(url, None)
        started = time.monotonic()
        with pytest.raises(ProbeTimeout):
            await client.request("GET", "/", (), within=0.3, limit=100)
        assert time.monotonic() - started < 2
        assert (await client.request("GET", "/", (), within=5, limit=100)).body == b"ok"
        assert len(accepted) == 2
        client.close()


async def test_a_backend_that_never_answers_times_out() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    async with serving(handler) as (url, _):
        client = ProbeClient(url, None)
        with pytest.raises(ProbeTimeout):
            await client.request("GET", "/", (), within=0.2, limit=100)


async def test_a_connection_closed_while_idle_is_retried_once_on_a_new_one() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    async with serving(answering(ok, then_close=True)) as (url, accepted):
        client = ProbeClient(url, None)
        assert (await client.request("GET", "/", (), within=5, limit=100)).status == 200
        await asyncio.sleep(0.05)  # the server closed the kept-alive connection meanwhile
        assert (await client.request("GET", "/", (), within=5, limit=100)).status == 200
        assert len(accepted) == 2
        client.close()


async def test_a_connection_closed_mid_answer_or_before_it_is_an_error() -> None:
    async with serving(answering(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", then_close=True)) as (
        url,
        _,
    ):
        with pytest.raises(ProbeError, match="middle of an answer"):
            await ProbeClient(url, None).request("GET", "/", (), within=5, limit=100)
    async with serving(answering(then_close=True)) as (url, _):
        with pytest.raises(ProbeError, match="closed before an answer"):
            await ProbeClient(url, None).request("GET", "/", (), within=5, limit=100)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc", "conflicting"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 200 + b"\r\n", "more than 100 header lines"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"y" * 20000 + b"\r\n\r\n", "header line longer"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
    ],
)
async def test_a_malformed_answer_is_an_error_not_a_crash(answer: bytes, message: str) -> None:
    async with serving(answering(answer)) as (url, _):
        client = ProbeClient(url, None)
        with pytest.raises(ProbeError, match=message):
            await client.request("GET", "/", (), within=5, limit=100)
        assert client._writer is None


async def test_nobody_listening_is_cannot_connect() -> None:
    async with serving(answering()) as (url, _):
        pass
    with pytest.raises(ProbeError, match="cannot connect"):
        await ProbeClient(url, None).request("GET", "/", (), within=5, limit=100)


async def test_headers_that_cannot_be_sent_are_refused_before_connecting() -> None:
    client = ProbeClient("http://127.0.0.1:9", None)
    with pytest.raises(UnicodeError):
        await client.request("GET", "/", (("X-Name", "€"),), within=5, limit=100)
    with pytest.raises(ValueError, match="line break"):
        await client.request("GET", "/", (("X-Name", "a\r\nInjected: 1"),), within=5, limit=100)
