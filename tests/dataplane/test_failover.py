"""Failover before the first byte, and honest errors after it, over real HTTP with the official clients.

Before anything reached the client, a 5xx answer, a timeout or a connection reset is retried on the
next candidate backend (at most ``MAX_ATTEMPTS`` in all, only when the frontend allows retries); the
client sees the last failure. Once bytes went out, a backend that breaks off ends the stream with an
error in the client's format, never a faked completion, whether the stream is translated or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack

import httpx
import ollama
import openai
import pytest
from aiohttp import web

from dataplane.proxy.failover import MAX_ATTEMPTS
from ollamaflow.sim import SimConfig, running_sim
from shared.snapshot import ApiFormat, BackendView, FrontendView, SnapshotContent
from tests.dataplane.harness import RunningDataPlane, SnapshotWriter

MESSAGES = [{"role": "user", "content": "Tell me about load balancers."}]
GENERATE = {"model": "llama3.2", "prompt": "x", "stream": False}


async def _serve(
    writer: SnapshotWriter,
    dp: RunningDataPlane,
    backends: dict[str, str],
    formats: dict[str, ApiFormat] | None = None,
    **frontend: object,
) -> None:
    """The backends in the given order (RoundRobin starts with the first), all limits generous."""
    views = tuple(
        BackendView(
            id=i,
            base_url=url,
            api_format=(formats or {}).get(i, "Ollama"),
            max_parallel_requests=100,
            rate_limit_requests_threshold=1000,
        )
        for i, url in backends.items()
    )
    view = FrontendView(id="f", hostname="*", backends=tuple(backends), **frontend)  # type: ignore[arg-type]
    revision = dp.app.state.revision + 1
    await writer.publish(SnapshotContent(frontends=(view,), backends=views), revision)
    await dp.wait_revision(revision)


async def _stats(client: httpx.AsyncClient, sim: str) -> dict[str, int]:
    return (await client.get(sim + "/_sim/stats")).json()


async def test_a_5xx_before_the_answer_is_retried_on_the_next_backend(
    dp: RunningDataPlane, writer: SnapshotWriter
) -> None:
    async with running_sim(SimConfig(fail_rate=1.0)) as bad, running_sim() as good:
        await _serve(writer, dp, {"a-bad": bad, "b-good": good})
        client = ollama.AsyncClient(host=dp.url)
        for _ in range(2):
            assert (await client.generate(model="llama3.2", prompt="x")).response
            parts = [p async for p in await client.chat(model="llama3.2", messages=MESSAGES, stream=True)]
            assert parts[-1].done
        async with httpx.AsyncClient() as http:
            assert (await _stats(http, bad))["failures_injected"] >= 1
            assert (await _stats(http, good))["requests_total"] == 4


async def test_when_every_attempt_fails_the_client_gets_the_last_answer(
    dp: RunningDataPlane, writer: SnapshotWriter
) -> None:
    async with (
        running_sim(SimConfig(fail_rate=1.0, fail_status=500)) as first,
        running_sim(SimConfig(fail_rate=1.0, fail_status=503)) as second,
    ):
        await _serve(writer, dp, {"first": first, "second": second})
        statuses = {"first": 500, "second": 503}
        async with httpx.AsyncClient() as client:
            answer = await client.post(dp.url + "/api/generate", json=GENERATE)
            # Both were tried once; the answer is the one the last of them gave, as it gave it.
            assert answer.status_code == statuses[answer.headers["x-ollamaflow-backend"]]
            assert set(answer.json()) == {"error"}  # the backend's own body, relayed
            assert [(await _stats(client, s))["requests_total"] for s in (first, second)] == [1, 1]


async def test_attempts_are_bounded(dp: RunningDataPlane, writer: SnapshotWriter) -> None:
    async with AsyncExitStack() as stack:
        sims = [await stack.enter_async_context(running_sim(fail_rate=1.0)) for _ in range(MAX_ATTEMPTS + 1)]
        await _serve(writer, dp, {f"s{i}": url for i, url in enumerate(sims)})
        async with httpx.AsyncClient() as client:
            answer = await client.post(dp.url + "/api/generate", json=GENERATE)
            assert answer.status_code == 500
            tried = [(await _stats(client, sim))["requests_total"] for sim in sims]
        assert sum(tried) == MAX_ATTEMPTS and max(tried) == 1


async def test_without_retries_a_5xx_reaches_the_client(dp: RunningDataPlane, writer: SnapshotWriter) -> None:
    async with running_sim(SimConfig(fail_rate=1.0)) as bad, running_sim() as good:
        await _serve(writer, dp, {"a-bad": bad, "b-good": good}, allow_retries=False)
        async with httpx.AsyncClient() as client:
            answer = await client.post(dp.url + "/api/generate", json=GENERATE)
            assert (answer.status_code, answer.headers["x-ollamaflow-backend"]) == (500, "a-bad")
            assert (await _stats(client, good))["requests_total"] == 0


async def test_no_answer_in_time_is_retried_on_the_next_backend(
    dp: RunningDataPlane, writer: SnapshotWriter
) -> None:
    async with running_sim(latency_ms=30_000) as slow, running_sim() as fast:
        await _serve(writer, dp, {"a-slow": slow, "b-fast": fast}, timeout_ms=2000)
        async with httpx.AsyncClient(timeout=30) as client:
            answer = await client.post(dp.url + "/api/generate", json=GENERATE)
            assert (answer.status_code, answer.headers["x-ollamaflow-backend"]) == (200, "b-fast")
            assert (await _stats(client, slow))["requests_total"] == 1


@contextlib.asynccontextmanager
async def _resetting_backend() -> AsyncIterator[str]:
    """Reads a request, then drops the connection without a word (a backend that crashed on it)."""

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.transport.abort()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()


async def test_a_connection_reset_before_the_answer_is_retried_on_the_next_backend(
    dp: RunningDataPlane, writer: SnapshotWriter
) -> None:
    async with _resetting_backend() as resetting, running_sim() as good:
        await _serve(writer, dp, {"a-reset": resetting, "b-good": good})
        async with httpx.AsyncClient(timeout=30) as client:
            answer = await client.post(dp.url + "/api/generate", json=GENERATE)
            assert (answer.status_code, answer.headers["x-ollamaflow-backend"]) == (200, "b-good")
        assert "a-reset" not in dp.app.traffic.in_flight_by_backend()


# A backend that sends the first part of a stream in its own format, then drops the connection.
async def _breaking(request: web.Request) -> web.StreamResponse:
    await request.read()
    openai_format = request.path.startswith("/v1/")
    content_type = "text/event-stream" if openai_format else "application/x-ndjson"
    response = web.StreamResponse(headers={"Content-Type": content_type})
    await response.prepare(request)
    if openai_format:
        chunk = {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "llama3.2",
            "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": "Hel"}, "finish_reason": None}
            ],
        }
        await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    else:
        line = {
            "model": "llama3.2",
            "created_at": "2025-01-01T00:00:00Z",
            "message": {"role": "assistant", "content": "Hel"},
            "done": False,
        }
        await response.write(json.dumps(line).encode() + b"\n")
    await asyncio.sleep(0.05)
    assert request.transport is not None
    request.transport.abort()
    return response


@contextlib.asynccontextmanager
async def _breaking_backend() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/api/chat", _breaking)
    app.router.add_post("/v1/chat/completions", _breaking)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        await runner.cleanup()


async def _ollama_stream(url: str) -> list[str]:
    """The ollama client's view: the parts' text until it raises on the error line."""
    texts = []
    with pytest.raises(ollama.ResponseError) as caught:
        async for part in await ollama.AsyncClient(host=url).chat(
            model="llama3.2", messages=MESSAGES, stream=True
        ):
            assert not part.done
            texts.append(part.message.content)
    assert caught.value.error
    return texts


async def _openai_stream(url: str) -> list[str]:
    """The openai client's view: the chunks' text until it raises on the error event."""
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    texts = []
    with pytest.raises(openai.APIError) as caught:
        async for chunk in await client.chat.completions.create(
            model="llama3.2", messages=MESSAGES, stream=True
        ):
            assert chunk.choices[0].finish_reason is None if chunk.choices else True
            texts.extend(c.delta.content or "" for c in chunk.choices)
    assert caught.value.message
    return texts


@pytest.mark.parametrize(
    ("backend_format", "client"),
    [
        ("Ollama", _ollama_stream),
        ("OpenAI", _openai_stream),
        ("OpenAI", _ollama_stream),
        ("Ollama", _openai_stream),
    ],
    ids=["ollama-passthrough", "openai-passthrough", "ollama-client-translated", "openai-client-translated"],
)
async def test_a_stream_that_breaks_after_bytes_went_out_ends_with_an_error_in_the_clients_format(
    dp: RunningDataPlane,
    writer: SnapshotWriter,
    backend_format: ApiFormat,
    client: Callable[[str], Awaitable[list[str]]],
) -> None:
    async with _breaking_backend() as breaking, running_sim() as good:
        # The breaking backend first, and retries allowed: a broken stream is still not retried.
        await _serve(writer, dp, {"a-break": breaking, "b-good": good}, {"a-break": backend_format})
        assert "Hel" in "".join(await client(dp.url))
        async with httpx.AsyncClient() as http:
            assert (await _stats(http, good))["requests_total"] == 0
