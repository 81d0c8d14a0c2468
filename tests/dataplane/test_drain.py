"""The graceful stop over real HTTP and NATS: what SIGTERM does to readiness, reports, new and existing
connections, running streams and waiting requests (``dataplane.drain``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import ollama
import openai
import pytest
from aiohttp import web

from dataplane.settings import DataPlaneSettings
from ollamaflow.sim import running_sim
from shared.bus import Bus
from shared.errors import BusNoResponder
from shared.snapshot import BackendView
from shared.wire.explain import ExplainRequest
from shared.wire.explain import encode as encode_explain
from tests.dataplane.harness import (
    RunningDataPlane,
    SnapshotWriter,
    eventually,
    running_dataplane,
    serve_frontend,
)

MESSAGES = [{"role": "user", "content": "Tell me about load balancers."}]


@contextlib.asynccontextmanager
async def _plane(
    settings: DataPlaneSettings, writer: SnapshotWriter, backends: list[BackendView], bus: Bus | None = None
) -> AsyncIterator[RunningDataPlane]:
    async with running_dataplane(settings, listen_reports=bus) as dp:
        await serve_frontend(writer, dp, backends)
        yield dp


async def eventually_answers(bus: Bus, ask: bytes) -> None:
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        try:
            await bus.request(bus.names.explain_subject, ask, wait=2)
            return
        except BusNoResponder:
            assert asyncio.get_running_loop().time() < deadline, "no answer to a routing dry-run"
            await asyncio.sleep(0.1)


async def eventually_unanswered(bus: Bus, ask: bytes) -> None:
    """Until no data plane answers ``ask`` (the unsubscription may take a moment to reach NATS)."""
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        try:
            await bus.request(bus.names.explain_subject, ask, wait=2)
        except BusNoResponder:
            return
        assert asyncio.get_running_loop().time() < deadline, "a draining data plane answers dry-runs"
        await asyncio.sleep(0.1)


async def _refused(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    try:
        _, writer = await asyncio.open_connection(host, int(port))
    except ConnectionRefusedError:
        return True
    writer.close()
    return False


async def _until_refused(dp: RunningDataPlane) -> None:
    deadline = asyncio.get_running_loop().time() + 5
    while not await _refused(dp.url):
        assert asyncio.get_running_loop().time() < deadline, "new connections are still accepted"
        await asyncio.sleep(0.05)


async def test_sigterm_says_draining_at_once_and_serves_a_request_already_arriving(
    dp_settings: DataPlaneSettings, writer: SnapshotWriter, bus: Bus
) -> None:
    # Reports every 30 s: a draining report within seconds can only be the one sent at once.
    settings = replace(dp_settings, report_interval=30.0)
    async with running_sim() as sim, _plane(settings, writer, [BackendView(id="b", base_url=sim)], bus) as dp:
        await eventually(lambda: len(dp.reports) >= 1, 10, "the first report")
        assert not dp.reports[-1].draining
        assert (await dp.readyz()).status_code == 200
        ask = encode_explain(ExplainRequest(model="llama3.2"))
        await eventually_answers(bus, ask)  # it answers routing dry-runs while it serves
        host, port = dp.url.removeprefix("http://").split(":")
        reader, conn = await asyncio.open_connection(host, int(port))
        conn.write(b"GET /readyz HTTP/1.1\r\nHost: t\r\n")  # a request on its way when SIGTERM comes
        await conn.drain()
        await asyncio.sleep(0.2)

        dp.stop()
        await eventually(lambda: any(r.draining for r in dp.reports), 5, "a draining report")
        await _until_refused(dp)  # no new connections
        await eventually_unanswered(bus, ask)  # dry-runs are left to the data planes that stay

        conn.write(b"\r\n")
        await conn.drain()
        head, _, body = (await asyncio.wait_for(reader.read(), 10)).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503"), head
        assert b"connection: close" in head.lower()
        answer = json.loads(body)
        assert answer["status"] == "draining"
        assert "shutting down" in answer["detail"]
        conn.close()

        await dp.stopped()
        await eventually(lambda: dp.reports[-1].stopped, 5, "the last report, saying it stopped")
        assert dp.reports[-1].draining


async def test_a_running_stream_completes_whole_while_new_connections_are_refused(
    dp_settings: DataPlaneSettings, writer: SnapshotWriter
) -> None:
    settings = replace(dp_settings, drain_timeout=20.0)
    # 12 tokens at 6 a second: a stream of about two seconds.
    async with (
        running_sim(tokens_per_second=6) as sim,
        _plane(settings, writer, [BackendView(id="b", base_url=sim)]) as dp,
    ):
        direct = [p async for p in await ollama.AsyncClient(host=sim).chat("llama3.2", MESSAGES, stream=True)]
        stream = await ollama.AsyncClient(host=dp.url).chat("llama3.2", MESSAGES, stream=True)
        parts = [await anext(stream)]
        dp.stop()
        await _until_refused(dp)
        parts += [part async for part in stream]
        assert parts[-1].done
        assert "".join(p.message.content for p in parts) == "".join(p.message.content for p in direct)
        await dp.stopped()


async def test_drain_timeout_ends_an_ollama_stream_with_an_error_line(
    dp_settings: DataPlaneSettings, writer: SnapshotWriter
) -> None:
    settings = replace(dp_settings, drain_timeout=1.0)
    async with (
        running_sim(tokens_per_second=2) as sim,
        _plane(  # about six seconds
            settings, writer, [BackendView(id="b", base_url=sim)]
        ) as dp,
    ):
        async with httpx.AsyncClient(timeout=20) as client:
            body = {"model": "llama3.2", "messages": MESSAGES}
            async with client.stream("POST", dp.url + "/api/chat", json=body) as response:
                lines = response.aiter_lines()
                first = json.loads(await anext(lines))
                assert first["done"] is False
                dp.stop()
                rest = [json.loads(line) async for line in lines]
        assert rest, "the stream ended without a word"
        assert "shutting down" in rest[-1]["error"]
        assert all(not line.get("done") for line in rest)
        await dp.stopped()


async def test_drain_timeout_ends_a_stream_for_the_official_ollama_client(
    dp_settings: DataPlaneSettings, writer: SnapshotWriter
) -> None:
    settings = replace(dp_settings, drain_timeout=1.0)
    async with (
        running_sim(tokens_per_second=2) as sim,
        _plane(settings, writer, [BackendView(id="b", base_url=sim)]) as dp,
    ):
        stream = await ollama.AsyncClient(host=dp.url).chat("llama3.2", MESSAGES, stream=True)
        await anext(stream)
        dp.stop()
        with pytest.raises(ollama.ResponseError) as caught:
            async for _ in stream:
                pass
        assert "shutting down" in caught.value.error
        await dp.stopped()


@pytest.mark.parametrize("backend_format", ["openai", "ollama"])  # passed through, translated
async def test_drain_timeout_ends_an_openai_stream_with_an_error_event(
    dp_settings: DataPlaneSettings, writer: SnapshotWriter, backend_format: str
) -> None:
    settings = replace(dp_settings, drain_timeout=1.0)
    api_format = "OpenAI" if backend_format == "openai" else "Ollama"
    async with (
        running_sim(tokens_per_second=2, format=backend_format) as sim,
        _plane(settings, writer, [BackendView(id="b", base_url=sim, api_format=api_format)]) as dp,
    ):
        client = openai.AsyncOpenAI(base_url=dp.url + "/v1", api_key="unused", max_retries=0)
        model = "llama3.2:latest" if backend_format == "openai" else "llama3.2"
        stream = await client.chat.completions.create(model=model, messages=MESSAGES, stream=True)  # type: ignore[arg-type]
        await anext(aiter(stream))
        dp.stop()
        with pytest.raises(openai.APIError) as caught:
            async for _ in stream:
                pass
        assert "shutting down" in caught.value.message
        await dp.stopped()


async def test_drain_timeout_answers_waiting_and_queued_requests_503_in_their_format(
    dp_settings: DataPlaneSettings, writer: SnapshotWriter
) -> None:
    settings = replace(dp_settings, drain_timeout=1.0)
    # The backend answers after 20 s and takes one request at a time: the first request waits for its
    # first byte, the second waits in the queue.
    async with (
        running_sim(latency_ms=20_000) as sim,
        _plane(settings, writer, [BackendView(id="b", base_url=sim, max_parallel_requests=1)]) as dp,
        httpx.AsyncClient(timeout=30) as client,
    ):
        waiting = asyncio.create_task(
            client.post(dp.url + "/api/generate", json={"model": "llama3.2", "prompt": "Why?"})
        )
        await eventually(lambda: dp.app.traffic.in_flight.get("b") == 1, 10, "the first request sent")
        body = {"model": "llama3.2", "messages": MESSAGES}
        queued = asyncio.create_task(client.post(dp.url + "/v1/chat/completions", json=body))
        await eventually(lambda: dp.app.admission.queued().get("b") == 1, 10, "the second request queued")

        dp.stop()
        first, second = await asyncio.wait_for(asyncio.gather(waiting, queued), 15)
        for response in (first, second):
            assert response.status_code == 503
            assert response.headers["retry-after"] == "1"
            assert response.headers["connection"] == "close"
            assert response.headers["x-ollamaflow-request"]
        assert "shutting down" in first.json()["error"]  # Ollama's shape
        error = second.json()["error"]  # OpenAI's shape
        assert "shutting down" in error["message"]
        assert error["type"] == "server_error"
        await dp.stopped()
        assert not dp.app.traffic.in_flight  # the backend's slot was given back


@contextlib.asynccontextmanager
async def _stuck_backend() -> AsyncIterator[str]:
    """An Ollama-like backend whose model list never comes and whose create progress stops after two
    lines: answers still running when the drain times out."""
    release = asyncio.Event()

    async def tags(request: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({"models": []})

    async def create(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        for status in ("parsing modelfile", "using existing layer"):
            await response.write(json.dumps({"status": status}).encode() + b"\n")
        await release.wait()
        return response

    app = web.Application()
    app.router.add_get("/api/tags", tags)
    app.router.add_post("/api/create", create)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        release.set()
        await runner.cleanup()


async def test_drain_timeout_ends_listings_and_model_streams_in_ollamas_format(
    dp_settings: DataPlaneSettings, writer: SnapshotWriter
) -> None:
    settings = replace(dp_settings, drain_timeout=1.0)
    async with (
        _stuck_backend() as url,
        running_dataplane(settings) as dp,
        httpx.AsyncClient(timeout=30) as client,
    ):
        await serve_frontend(writer, dp, [BackendView(id="b", base_url=url)], allow_model_management=True)
        tags = asyncio.create_task(client.get(dp.url + "/api/tags"))
        body = {"model": "mine", "from": "llama3.2"}
        async with client.stream("POST", dp.url + "/api/create", json=body) as response:
            lines = response.aiter_lines()
            assert json.loads(await anext(lines)) == {"status": "parsing modelfile"}
            await eventually(lambda: dp.app.drain.running == 2, 10, "both requests running")
            dp.stop()
            rest = [json.loads(line) async for line in lines]
        assert "shutting down" in rest[-1]["error"]
        listing = await asyncio.wait_for(tags, 15)
        assert listing.status_code == 503
        assert listing.headers["retry-after"] == "1"
        assert "shutting down" in listing.json()["error"]
        await dp.stopped()


async def test_drain_timeout_answers_a_request_whose_body_is_still_arriving(
    dp_settings: DataPlaneSettings, writer: SnapshotWriter
) -> None:
    settings = replace(dp_settings, drain_timeout=1.0)
    async with running_sim() as sim, _plane(settings, writer, [BackendView(id="b", base_url=sim)]) as dp:
        host, port = dp.url.removeprefix("http://").split(":")
        reader, conn = await asyncio.open_connection(host, int(port))
        conn.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{")
        await conn.drain()
        await eventually(lambda: dp.app.drain.running == 1, 10, "the request running")
        dp.stop()
        head, _, body = (await asyncio.wait_for(reader.read(), 15)).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503"), head
        assert b"retry-after: 1" in head.lower()
        assert "shutting down" in json.loads(body)["error"]["message"]  # OpenAI's shape
        conn.close()
        await dp.stopped()


async def test_a_client_that_reads_nothing_cannot_hold_the_stop_beyond_the_drain(
    dp_settings: DataPlaneSettings, writer: SnapshotWriter
) -> None:
    settings = replace(dp_settings, drain_timeout=1.0)
    # A long answer as fast as it comes, to a client that never reads: the data plane's writes pause.
    async with (
        running_sim(answer_tokens=1_000_000) as sim,
        _plane(settings, writer, [BackendView(id="b", base_url=sim)]) as dp,
    ):
        host, port = dp.url.removeprefix("http://").split(":")
        _, conn = await asyncio.open_connection(host, int(port))
        body = json.dumps({"model": "llama3.2", "messages": MESSAGES}).encode()
        conn.write(b"POST /api/chat HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await conn.drain()
        await eventually(lambda: dp.app.traffic.in_flight.get("b") == 1, 10, "the stream running")
        await asyncio.sleep(0.5)  # its bytes pile up
        dp.stop()
        await dp.stopped(within=15)  # the drain timeout, then END_GRACE, then it closes the connection
        conn.close()
