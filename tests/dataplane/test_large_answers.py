"""Large answers and the frontend's TimeoutMs, through a running data plane in front of the simulator.

Regressions of an outage: non-streamed answers between 256 KiB and 4 MiB (a 400-input /api/embed is
3.2 MB) never arrived, so that twelve of them held every backend slot; and TimeoutMs never fired
while the upstream connection was paused. Each client speaks its own API, and errors come in its
own format.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
from collections.abc import AsyncIterator

import httpx
import ollama
import openai
import pytest

from dataplane.settings import DataPlaneSettings
from ollamaflow.sim import running_sim
from shared.snapshot import BackendView
from tests.dataplane.harness import RunningDataPlane, SnapshotWriter, running_dataplane, serve_frontend
from tests.dataplane.transport.servers import full_backlog

INPUTS = [f"passage number {i} of a long document" for i in range(400)]


@pytest.fixture
async def ollama_sim() -> AsyncIterator[str]:
    async with running_sim() as url:
        yield url


@pytest.fixture
async def openai_sim() -> AsyncIterator[str]:
    async with running_sim(format="openai", models=("gpt-sim", "text-embedding-sim")) as url:
        yield url


async def test_a_400_input_embed_arrives_and_twelve_at_once_do_not_jam(
    dp: RunningDataPlane, writer: SnapshotWriter, ollama_sim: str
) -> None:
    await serve_frontend(writer, dp, [BackendView(id="sim", base_url=ollama_sim, max_parallel_requests=4)])
    client = ollama.AsyncClient(host=dp.url, timeout=60)
    answer = await client.embed(model="all-minilm", input=INPUTS)
    assert len(answer.embeddings) == 400 and len(answer.embeddings[0]) == 384
    # Twelve at once on four slots: the queue drains as each answer arrives.
    answers = await asyncio.gather(*(client.embed(model="all-minilm", input=INPUTS) for _ in range(12)))
    assert all(a.embeddings == answer.embeddings for a in answers)
    async with httpx.AsyncClient(timeout=60) as http:  # nobody got a 503 meanwhile
        resp = await http.post(dp.url + "/api/embed", json={"model": "all-minilm", "input": INPUTS})
        assert resp.status_code == 200 and len(resp.content) > 3_000_000


@pytest.mark.parametrize("backend_format", ["Ollama", "OpenAI"])
async def test_a_400_input_openai_embedding_arrives(
    dp: RunningDataPlane, writer: SnapshotWriter, ollama_sim: str, openai_sim: str, backend_format: str
) -> None:
    """Passed through from an OpenAI backend, or translated (read whole) from an Ollama one."""
    if backend_format == "Ollama":
        backend, model = BackendView(id="sim", base_url=ollama_sim), "all-minilm"
    else:
        backend, model = BackendView(id="sim", base_url=openai_sim, api_format="OpenAI"), "text-embedding-sim"
    await serve_frontend(writer, dp, [backend])
    client = openai.AsyncOpenAI(base_url=dp.url + "/v1", api_key="unused", timeout=60, max_retries=0)
    answer = await client.embeddings.create(model=model, input=INPUTS)
    assert len(answer.data) == 400
    assert [item.index for item in answer.data] == list(range(400))


async def test_a_non_streamed_generate_with_a_large_prompt_arrives(
    dp: RunningDataPlane, writer: SnapshotWriter, ollama_sim: str
) -> None:
    await serve_frontend(writer, dp, [BackendView(id="sim", base_url=ollama_sim)])
    client = ollama.AsyncClient(host=dp.url, timeout=60)
    answer = await client.generate(model="llama3.2", prompt="word " * 300_000, stream=False)
    assert answer.done and len(answer.context or []) > 300_000  # about 2 MB of answer


async def test_a_32_mb_answer_passes_through(
    dp: RunningDataPlane, writer: SnapshotWriter, ollama_sim: str
) -> None:
    await serve_frontend(writer, dp, [BackendView(id="sim", base_url=ollama_sim)])
    inputs = [f"text {i}" for i in range(550)]
    async with httpx.AsyncClient(timeout=120) as http:
        direct = await http.post(ollama_sim + "/api/embed", json={"model": "llama3.2", "input": inputs})
        through = await http.post(dp.url + "/api/embed", json={"model": "llama3.2", "input": inputs})
    assert through.status_code == 200
    assert len(through.content) > 32 * 1024 * 1024
    assert through.headers["content-length"] == str(len(through.content))
    body, expected = through.json(), direct.json()
    assert body["embeddings"] == expected["embeddings"]


async def test_a_translated_answer_over_the_cap_is_a_502_in_the_clients_format(
    dp_settings: DataPlaneSettings, writer: SnapshotWriter, ollama_sim: str, openai_sim: str
) -> None:
    settings = dataclasses.replace(dp_settings, max_translated_body=1024 * 1024)
    async with running_dataplane(settings) as dp:
        await serve_frontend(writer, dp, [BackendView(id="sim", base_url=ollama_sim)])
        client = openai.AsyncOpenAI(base_url=dp.url + "/v1", api_key="unused", timeout=60, max_retries=0)
        with pytest.raises(openai.APIStatusError) as caught:
            await client.embeddings.create(model="all-minilm", input=INPUTS)
        assert caught.value.status_code == 502
        error = caught.value.body
        assert isinstance(error, dict)
        assert "too large to translate: over 1048576 bytes" in error["message"]
        assert "OLLAMAFLOW_MAX_TRANSLATED_BODY" in error["message"]
        # Small translated answers still pass.
        answer = await client.embeddings.create(model="all-minilm", input=INPUTS[:10])
        assert len(answer.data) == 10

        await serve_frontend(writer, dp, [BackendView(id="oa", base_url=openai_sim, api_format="OpenAI")])
        ollama_client = ollama.AsyncClient(host=dp.url, timeout=60)
        with pytest.raises(ollama.ResponseError) as refused:
            await ollama_client.embed(model="text-embedding-sim", input=INPUTS)
        assert refused.value.status_code == 502
        assert "OLLAMAFLOW_MAX_TRANSLATED_BODY" in refused.value.error


# TimeoutMs in every state


@pytest.mark.parametrize("api_format", ["Ollama", "OpenAI"])
async def test_timeout_ms_fires_while_the_headers_never_come(
    dp: RunningDataPlane, writer: SnapshotWriter, api_format: str
) -> None:
    async with running_sim(latency_ms=30_000) as slow:
        await serve_frontend(writer, dp, [BackendView(id="slow", base_url=slow)], timeout_ms=300)
        chat = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}
        async with httpx.AsyncClient(timeout=20) as http:
            if api_format == "Ollama":
                resp = await http.post(dp.url + "/api/chat", json=chat)
                message = resp.json()["error"]
            else:
                resp = await http.post(dp.url + "/v1/chat/completions", json=chat)
                message = resp.json()["error"]["message"]
        request_id = resp.headers["x-ollamaflow-request"]
        assert message == f"backend slow did not answer within 0.3s (request {request_id})"
        assert resp.status_code == 504


async def test_timeout_ms_bounds_the_connect(dp_settings: DataPlaneSettings, writer: SnapshotWriter) -> None:
    """The connect takes the shorter of the connect timeout (here 30 s) and TimeoutMs."""
    settings = dataclasses.replace(dp_settings, upstream_connect_timeout=30.0)
    async with running_dataplane(settings) as dp, httpx.AsyncClient(timeout=20) as http:
        with full_backlog() as url:
            await serve_frontend(writer, dp, [BackendView(id="hung", base_url=url)], timeout_ms=300)
            resp = await http.post(dp.url + "/api/generate", json={"model": "llama3.2", "prompt": "hi"})
    assert resp.status_code == 504
    request_id = resp.headers["x-ollamaflow-request"]
    expected = f"timed out connecting to backend hung (after 0.3s) (request {request_id})"
    assert resp.json() == {"error": expected}


def _slow_reader(port: int) -> socket.socket:
    """A client connection with a small receive buffer, so that a reader that stops reading is
    soon felt upstream."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    return sock


async def test_timeout_ms_fires_while_a_client_that_stopped_reading_holds_the_stream(
    dp: RunningDataPlane, writer: SnapshotWriter
) -> None:
    """The client stops reading a fast stream: the data plane stops reading the backend (paused), and
    after TimeoutMs without progress drops the backend's connection; the client, once it reads
    again, gets what was on its way and then Ollama's error line."""
    async with running_sim(answer_tokens=500_000) as sim:
        await serve_frontend(writer, dp, [BackendView(id="sim", base_url=sim)], timeout_ms=500)
        port = int(dp.url.rsplit(":", 1)[1])
        sock = await asyncio.to_thread(_slow_reader, port)
        try:
            body = json.dumps({"model": "llama3.2", "prompt": "tell me everything"}).encode()
            head = b"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
            await asyncio.to_thread(sock.sendall, head + body)
            first = await asyncio.to_thread(sock.recv, 4096)
            assert first.startswith(b"HTTP/1.1 200")

            async with httpx.AsyncClient(timeout=5) as http:

                async def backend_released() -> bool:
                    stats = (await http.get(sim + "/_sim/stats")).json()
                    return stats["in_flight"] == 0 and stats["disconnects"] == 1

                deadline = asyncio.get_running_loop().time() + 20
                while not await backend_released():  # the client reads nothing meanwhile
                    assert asyncio.get_running_loop().time() < deadline, "the backend was never released"
                    await asyncio.sleep(0.1)

            def read_rest() -> bytes:
                sock.settimeout(20)
                parts = [first]
                while chunk := sock.recv(65536):
                    parts.append(chunk)
                    if parts[-1].endswith(b"0\r\n\r\n"):
                        break
                return b"".join(parts)

            received = await asyncio.to_thread(read_rest)
        finally:
            sock.close()
    lines = [line for line in received.split(b"\n") if line.startswith(b"{")]
    assert json.loads(lines[-1]) == {
        "error": "backend sim was cut off: nothing of its answer was taken for 0.5s"
    }
    assert not any(b'"done":true' in line for line in lines)


async def test_a_long_stream_that_keeps_producing_outlives_timeout_ms(
    dp: RunningDataPlane, writer: SnapshotWriter
) -> None:
    async with running_sim(answer_tokens=30, tokens_per_second=20) as sim:  # 1.5 s in all
        await serve_frontend(writer, dp, [BackendView(id="sim", base_url=sim)], timeout_ms=500)
        client = ollama.AsyncClient(host=dp.url, timeout=30)
        parts = [part async for part in await client.generate(model="llama3.2", prompt="hi", stream=True)]
    assert parts[-1].done and len(parts) == 31


async def test_the_aiohttp_client_in_the_data_planes_place(
    dp_settings: DataPlaneSettings, writer: SnapshotWriter, ollama_sim: str
) -> None:
    """OLLAMAFLOW_UPSTREAM_CLIENT=aiohttp: the same answers, large and streamed, through the reference."""
    settings = dataclasses.replace(dp_settings, upstream_client="aiohttp")
    async with running_dataplane(settings) as dp:
        assert type(dp.app.upstream).__name__ == "AiohttpUpstream"
        await serve_frontend(writer, dp, [BackendView(id="sim", base_url=ollama_sim)])
        client = ollama.AsyncClient(host=dp.url, timeout=60)
        answer = await client.embed(model="all-minilm", input=INPUTS)
        assert len(answer.embeddings) == 400
        parts = [part async for part in await client.generate(model="llama3.2", prompt="hi", stream=True)]
        assert parts[-1].done and "".join(p.response for p in parts)
