"""Client limits of a running data plane, probed with raw sockets: oversized and late headers, bodies
that stop coming or are too large, idle and half-sent connections, the connection cap, upgrades, and
a client that takes none of its stream. Each refusal is counted in the reports."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import resource
import socket
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import psutil
import pytest

from dataplane.http.client_limits import raise_open_files_limit
from dataplane.settings import DataPlaneSettings
from shared.bus import Bus
from shared.snapshot import BackendView
from tests.dataplane.harness import (
    RunningDataPlane,
    SnapshotWriter,
    eventually,
    running_dataplane,
    serve_frontend,
)
from tests.dataplane.recorder import Recorder, recorder

# Short enough for a quick test, long enough for a loaded machine to send a normal request in time.
LIMITS = {
    "client_header_timeout": 0.5,
    "client_keep_alive_timeout": 0.8,
    "client_body_timeout": 0.5,
    "client_send_timeout": 1.0,
    "max_json_body": 4096,
}


@pytest.fixture
async def limited(dp_settings: DataPlaneSettings, bus: Bus) -> AsyncIterator[RunningDataPlane]:
    async with running_dataplane(replace(dp_settings, **LIMITS), listen_reports=bus) as running:
        yield running


@pytest.fixture
async def rec() -> AsyncIterator[Recorder]:
    async with recorder() as running:
        yield running


def _port(dp: RunningDataPlane) -> int:
    return int(dp.url.rsplit(":", 1)[1])


async def _exchange(dp: RunningDataPlane, data: bytes, within: float = 15.0) -> bytes:
    """Send ``data``, then read until the data plane closes the connection (which it must, in time)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(dp))
    try:
        if data:
            writer.write(data)
        return await asyncio.wait_for(_until_closed(reader), within)
    finally:
        writer.close()


async def _until_closed(reader: asyncio.StreamReader) -> bytes:
    received = b""
    with contextlib.suppress(ConnectionError):
        while chunk := await reader.read(65536):
            received += chunk
    return received


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def _request(path: str = "/", *headers: bytes, body: bytes = b"", method: str = "GET") -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: test", *headers]
    if method == "PUT":  # a POST whose Content-Length is among ``headers``
        lines[0] = f"POST {path} HTTP/1.1".encode()
    elif body or method == "POST":
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def test_a_16_mib_header_is_refused_without_being_buffered(limited: RunningDataPlane) -> None:
    process = psutil.Process()
    before = process.memory_info().rss
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(limited))
    piece = b"a" * 65536

    async def send_huge_header() -> None:
        with contextlib.suppress(ConnectionError):
            writer.write(b"GET / HTTP/1.1\r\nHost: test\r\nX-Huge: ")
            for _ in range(256):  # 16 MiB
                writer.write(piece)
                await writer.drain()

    sending = asyncio.create_task(send_huge_header())
    try:
        response = await asyncio.wait_for(_until_closed(reader), 15)
    finally:
        sending.cancel()
        writer.close()
    assert _status(response) == 431
    assert b"connection: close" in response.lower()
    # Buffering the header (httptools keeps a partial value whole) would cost 16 MiB or more.
    assert process.memory_info().rss - before < 12 * 1024 * 1024
    assert limited.app.traffic.client_errors["header_too_large"] == 1


async def test_header_count_and_size_limits(limited: RunningDataPlane) -> None:
    def headers(count: int) -> list[bytes]:
        return [b"X-H%d: v" % i for i in range(count)]

    many = await _exchange(limited, _request("/", *headers(100_000)))
    assert _status(many) == 431
    over = await _exchange(limited, _request("/", *headers(100)))  # with Host: 101
    assert _status(over) == 431
    assert b"Too many request header fields." in over
    big = await _exchange(limited, _request("/", b"X-Big: " + b"b" * 70_000))  # in a single read
    assert _status(big) == 431
    async with httpx.AsyncClient() as client:
        served = await client.get(limited.url + "/", headers={f"X-H{i}": "v" for i in range(90)})
        large = await client.get(limited.url + "/", headers={"X-Big": "b" * 60_000})
    assert served.status_code == 200  # 90 + httpx's own headers: 100 at most
    assert large.status_code == 200
    assert limited.app.traffic.client_errors == {"too_many_headers": 2, "header_too_large": 1}


async def test_silent_and_half_sent_heads_get_408_and_are_closed(limited: RunningDataPlane) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    silent = await _exchange(limited, b"")
    assert loop.time() - started >= 0.4  # not before the header timeout
    partial = await _exchange(limited, b"GET / HTTP/1.1\r\nHost: te")
    for response in (silent, partial):
        assert _status(response) == 408
        assert b"connection: close" in response.lower()
    assert limited.app.traffic.client_errors == {"header_timeout": 2}


async def test_a_kept_alive_connection_is_closed_when_idle_or_when_its_next_request_stalls(
    limited: RunningDataPlane,
) -> None:
    idle = await _exchange(limited, _request("/api/version"))
    assert idle.count(b"HTTP/1.1 ") == 1 and _status(idle) == 200  # then closed, nothing more said
    stalled = await _exchange(limited, _request("/api/version") + b"GET /api/version HT")
    assert stalled.count(b"HTTP/1.1 200") == 1
    assert stalled.split(b"HTTP/1.1 ")[-1].startswith(b"408")
    # A trickle of empty lines between requests is no request: it is not kept waiting for ever either.
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(limited))
    writer.write(_request("/api/version"))

    async def trickle() -> None:
        with contextlib.suppress(ConnectionError):
            while True:
                await asyncio.sleep(0.2)
                writer.write(b"\r\n")

    trickling = asyncio.create_task(trickle())
    try:
        trickled = await asyncio.wait_for(_until_closed(reader), 15)
    finally:
        trickling.cancel()
        writer.close()
    assert trickled.startswith(b"HTTP/1.1 200")
    # Pipelined requests are still answered in order on one connection.
    pipelined = await _exchange(limited, _request("/api/version") * 3)
    assert pipelined.count(b"HTTP/1.1 200") == 3


async def test_a_body_that_stops_coming_is_a_408_in_the_clients_format(
    limited: RunningDataPlane, writer: SnapshotWriter, rec: Recorder
) -> None:
    await serve_frontend(writer, limited, [BackendView(id="rec", base_url=rec.url)])
    half = b'{"model": "echo", "mess'
    ollama = await _exchange(limited, _request("/api/chat", b"Content-Length: 100", method="PUT") + half)
    openai = await _exchange(
        limited, _request("/v1/chat/completions", b"Content-Length: 100", method="PUT") + half
    )
    for response in (ollama, openai):
        assert _status(response) == 408
        assert b"connection: close" in response.lower()
    assert b'{"error":"request body incomplete: nothing received for 0.5 s"}' in ollama
    assert b'"message":"request body incomplete: nothing received for 0.5 s"' in openai
    assert rec.seen == []
    assert limited.app.traffic.client_errors == {"body_timeout": 2}


async def test_expect_100_continue_still_works(
    limited: RunningDataPlane, writer: SnapshotWriter, rec: Recorder
) -> None:
    await serve_frontend(writer, limited, [BackendView(id="rec", base_url=rec.url)])
    body = b'{"model": "echo"}'
    reader, stream = await asyncio.open_connection("127.0.0.1", _port(limited))
    try:
        stream.write(
            _request("/api/chat", b"Expect: 100-continue", b"Content-Length: %d" % len(body), method="PUT")
        )
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).startswith(b"HTTP/1.1 100")
        stream.write(body)
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).startswith(b"HTTP/1.1 200")
    finally:
        stream.close()
    assert rec.seen[0].body == body


async def test_json_bodies_have_their_own_cap_but_blobs_do_not(
    limited: RunningDataPlane, writer: SnapshotWriter, rec: Recorder, backend_urls: list[str]
) -> None:
    await serve_frontend(writer, limited, [BackendView(id="rec", base_url=rec.url)])
    big = {"model": "echo", "prompt": "x" * 5000}
    async with httpx.AsyncClient(base_url=limited.url) as client:
        ollama = await client.post("/api/generate", json=big)
        openai = await client.post("/v1/completions", json=big)
        show = await client.post("/api/show", json=big)
        small = await client.post("/api/generate", json={"model": "echo"})
    assert ollama.status_code == openai.status_code == show.status_code == 413
    for message in (ollama.json()["error"], openai.json()["error"]["message"], show.json()["error"]):
        assert "limit of 4096 bytes" in message and "OLLAMAFLOW_MAX_JSON_BODY" in message
    assert small.status_code == 200
    assert len(rec.seen) == 1
    # A blob upload is bounded by the frontend's MaxRequestBodySize only.
    await serve_frontend(
        writer, limited, [BackendView(id="sim", base_url=backend_urls[0])], allow_model_management=True
    )
    data = b"z" * 10_000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    async with httpx.AsyncClient() as client:
        uploaded = await client.post(f"{limited.url}/api/blobs/{digest}", content=data)
        pushed = await client.post(f"{limited.url}/api/push", json={"model": "m", "pad": "p" * 5000})
    assert uploaded.status_code == 201
    assert pushed.status_code == 413 and "OLLAMAFLOW_MAX_JSON_BODY" in pushed.json()["error"]
    assert limited.app.traffic.client_errors == {"body_too_large": 4}


async def test_upgrades_are_refused_without_an_error_log(
    limited: RunningDataPlane, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="ollamaflow.dataplane.clients")
    websocket = _request(
        "/api/chat",
        b"Connection: Upgrade",
        b"Upgrade: websocket",
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        b"Sec-WebSocket-Version: 13",
    )
    refused = await _exchange(limited, websocket)
    assert _status(refused) == 400 and b"connection: close" in refused.lower()
    # An h2c offer is ignored, as HTTP/1.1 allows: the request is answered, then the connection ends.
    h2c = await _exchange(
        limited, _request("/api/version", b"Connection: Upgrade, HTTP2-Settings", b"Upgrade: h2c")
    )
    assert _status(h2c) == 200
    garbage = await _exchange(limited, b"NOT HTTP AT ALL\r\n\r\n")
    assert _status(garbage) == 400
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    debug = " ".join(r.getMessage() for r in caplog.records if r.name == "ollamaflow.dataplane.clients")
    assert "Protocol upgrades" in debug and "Invalid HTTP request" in debug
    for secret in ("/api/chat", "dGhlIHNhbXBsZSBub25jZQ", "NOT HTTP"):  # no request line, no header value
        assert secret not in debug
    assert limited.app.traffic.client_errors == {"upgrade": 1, "invalid_request": 1}


async def test_a_client_that_takes_none_of_its_stream_is_cut_off(
    limited: RunningDataPlane, writer: SnapshotWriter, rec: Recorder
) -> None:
    await serve_frontend(writer, limited, [BackendView(id="rec", base_url=rec.url)])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", _port(limited)))
    try:
        sock.send(_request("/api/chat", body=b'{"model": "flood"}', method="POST"))
        # Never read: once the data plane's buffers are full, it gives up after the send timeout.
        await eventually(lambda: limited.app.traffic.client_errors["send_timeout"] == 1, 20, "cut off")
        await eventually(lambda: rec.floods_ended == 1, 10, "the upstream stream stopped")
    finally:
        sock.close()


async def test_connections_over_the_cap_get_503_and_the_rest_are_served(
    dp_settings: DataPlaneSettings,
) -> None:
    async with running_dataplane(replace(dp_settings, client_max_connections=5)) as dp:
        held = [await asyncio.open_connection("127.0.0.1", _port(dp)) for _ in range(5)]
        try:
            refused = await _exchange(dp, _request("/api/version"))
            assert _status(refused) == 503 and b"connection: close" in refused.lower()
            assert dp.app.traffic.client_errors == {"connection_limit": 1}
        finally:
            for _, held_writer in held[:2]:
                held_writer.close()

        async def served() -> bool:
            with contextlib.suppress(httpx.HTTPError, IndexError, ValueError):
                async with httpx.AsyncClient() as client:
                    return (await client.get(dp.url + "/api/version")).status_code == 200
            return False

        for _ in range(100):  # the two closed ones leave as soon as the data plane notices
            if await served():
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("no client served after connections left")
        for _, held_writer in held[2:]:
            held_writer.close()


async def test_refusals_are_counted_in_the_reports(limited: RunningDataPlane) -> None:
    await _exchange(limited, b"")
    await _exchange(limited, b"BAD\r\n\r\n")
    await eventually(
        lambda: (
            bool(limited.reports)
            and limited.reports[-1].client_errors == {"header_timeout": 1, "invalid_request": 1}
        ),
        10,
        "counted in a report",
    )


def test_the_open_files_limit_is_raised_and_a_shortfall_is_told(caplog: pytest.LogCaptureFixture) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    raise_open_files_limit(100)
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= soft
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    if hard == resource.RLIM_INFINITY:
        return
    with caplog.at_level(logging.WARNING, logger="ollamaflow.dataplane.clients"):
        raise_open_files_limit(hard + 1)
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard  # as far as it goes
    assert "OLLAMAFLOW_CLIENT_MAX_CONNECTIONS" in caplog.text


async def test_a_malformed_body_is_counted_and_logged_at_debug_only(
    limited: RunningDataPlane, writer: SnapshotWriter, rec: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    await serve_frontend(writer, limited, [BackendView(id="rec", base_url=rec.url)])
    caplog.set_level(logging.DEBUG)
    async with httpx.AsyncClient(base_url=limited.url) as client:
        for body in (b"{not json", b'{"model": 3}', b"[]"):
            answer = await client.post("/api/chat", content=body)
            assert answer.status_code == 400 and "error" in answer.json()
    assert limited.app.traffic.client_errors == {"bad_request": 3}
    assert not rec.seen
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("ollamaflow")]
    assert not noisy, [r.getMessage() for r in noisy]


async def test_a_whole_answer_arrives_in_one_piece(limited: RunningDataPlane) -> None:
    port = _port(limited)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(3):  # each request on the kept-alive connection, not only the first
            writer.write(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            # One send on loopback is one read: without the cork the head came alone, the body after.
            answer = await asyncio.wait_for(reader.read(65536), 10)
            assert answer.startswith(b"HTTP/1.1 200 ")
            assert answer.endswith(b"\r\n\r\nOllama is running"), answer
    finally:
        writer.close()
