"""Fault injection, pacing, concurrency counting, disconnects and the /_sim control routes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import ollama
import openai
import pytest

from ollamaflow.sim import SimConfig, running_sim
from ollamaflow.sim.streaming import SERVER_BUSY, SIMULATED_FAILURE

pytestmark = pytest.mark.slow  # fault injection and timing; still only a few seconds in all

HELLO = [{"role": "user", "content": "Say hello"}]
CHAT = {"model": "llama3.2", "messages": HELLO}


async def _stats(http: httpx.AsyncClient) -> dict[str, Any]:
    return (await http.get("/_sim/stats")).json()


async def _until(http: httpx.AsyncClient, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The stats once ``check`` holds (or after 5 s, for the caller's assertion to report)."""
    deadline = time.monotonic() + 5.0
    while True:
        stats = await _stats(http)
        if check(stats) or time.monotonic() > deadline:
            return stats
        await asyncio.sleep(0.02)


async def test_fail_rate_one_answers_500_in_ollamas_shape() -> None:
    async with running_sim(SimConfig(fail_rate=1.0)) as url, httpx.AsyncClient(base_url=url) as http:
        client = ollama.AsyncClient(host=url)
        with pytest.raises(ollama.ResponseError) as error:
            await client.chat("llama3.2", messages=HELLO)
        assert error.value.status_code == 500 and error.value.error == SIMULATED_FAILURE
        reply = await http.post("/api/chat", json=CHAT)  # streamed requests fail before the first byte too
        assert reply.status_code == 500 and reply.json() == {"error": SIMULATED_FAILURE}
        assert (await http.get("/api/tags")).status_code == 200  # only inference fails
        assert (await _stats(http))["failures_injected"] == 2


async def test_fail_rate_one_answers_500_in_openais_shape() -> None:
    async with running_sim(SimConfig(format="openai", fail_rate=1.0)) as url:
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.InternalServerError) as error:
            await client.chat.completions.create(model="llama3.2:latest", messages=HELLO)
        assert error.value.status_code == 500
        assert error.value.body == {
            "message": SIMULATED_FAILURE,
            "type": "server_error",
            "param": None,
            "code": None,
        }
        with pytest.raises(openai.InternalServerError):
            await client.embeddings.create(model="all-minilm:latest", input="x")


async def test_fail_status_picks_the_kind_of_failure() -> None:
    async with running_sim(SimConfig(fail_rate=1.0, fail_status=503)) as url:
        with pytest.raises(ollama.ResponseError) as busy:
            await ollama.AsyncClient(host=url).generate("llama3.2", prompt="x")
        assert busy.value.status_code == 503 and busy.value.error == SERVER_BUSY
    async with running_sim(SimConfig(format="openai", fail_rate=1.0, fail_status=429)) as url:
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.RateLimitError) as limited:
            await client.chat.completions.create(model="llama3.2:latest", messages=HELLO)
        assert limited.value.code == "rate_limit_exceeded"


async def test_fail_rate_is_spread_evenly() -> None:
    async with running_sim(SimConfig(fail_rate=0.5)) as url, httpx.AsyncClient(base_url=url) as http:
        statuses = [
            (
                await http.post("/api/generate", json={"model": "llama3.2", "prompt": "x", "stream": False})
            ).status_code
            for _ in range(6)
        ]
        assert statuses == [200, 500, 200, 500, 200, 500]


async def test_mid_stream_failures() -> None:
    async with running_sim(SimConfig(fail_rate=1.0, fail_mid_stream=True)) as url:
        client = ollama.AsyncClient(host=url)
        received = []
        with pytest.raises(ollama.ResponseError, match="simulated failure"):
            async for part in await client.chat("llama3.2", messages=HELLO, stream=True):
                received.append(part)
        assert len(received) == 6 and not any(part.done for part in received)
        with pytest.raises(ollama.ResponseError) as whole:
            await client.chat("llama3.2", messages=HELLO)  # not streamed: fails before the first byte
        assert whole.value.status_code == 500
    async with running_sim(SimConfig(format="openai", fail_rate=1.0, fail_mid_stream=True)) as url:
        oai = openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        chunks = []
        with pytest.raises(openai.APIError, match="simulated failure"):
            async for chunk in await oai.chat.completions.create(
                model="llama3.2:latest", messages=HELLO, stream=True
            ):
                chunks.append(chunk)
        assert chunks and all(chunk.choices[0].finish_reason is None for chunk in chunks)


async def test_latency_and_pacing() -> None:
    async with running_sim(SimConfig(latency_ms=150, tokens_per_second=100)) as url:
        client = ollama.AsyncClient(host=url)
        start = time.monotonic()
        arrivals = []
        async for _part in await client.chat("llama3.2", messages=HELLO, stream=True):
            arrivals.append(time.monotonic() - start)
        assert len(arrivals) == 13
        assert arrivals[0] >= 0.14  # nothing before latency_ms
        # 12 tokens, 11 gaps of 10 ms after the latency. Measured from the start, not from the first
        # chunk: a client that gets a core late reads the first chunks together, shrinking the gaps.
        assert arrivals[-1] >= 0.9 * (0.15 + 11 / 100)
        start = time.monotonic()
        await client.chat("llama3.2", messages=HELLO)  # a whole reply waits as long as the stream would
        assert time.monotonic() - start >= 0.9 * (0.15 + 0.11)


async def test_peak_concurrency_counts_parallel_requests() -> None:
    async with (
        running_sim(SimConfig(tokens_per_second=40)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as http,
    ):
        client = ollama.AsyncClient(host=url)
        replies = await asyncio.gather(*(client.chat("llama3.2", messages=HELLO) for _ in range(5)))
        assert all(reply.done for reply in replies)
        stats = await _stats(http)
        assert stats["peak_concurrent"] == 5 and stats["in_flight"] == 0
        assert stats["requests_total"] == 5 and stats["by_path"] == {"/api/chat": 5}
        await http.post("/_sim/reset")
        assert await _stats(http) == {
            "requests_total": 0,
            "in_flight": 0,
            "peak_concurrent": 0,
            "by_path": {},
            "failures_injected": 0,
            "disconnects": 0,
            "chunks_sent": 0,
        }


@pytest.mark.parametrize(
    ("path", "config"),
    [
        ("/api/chat", SimConfig(tokens_per_second=20)),
        ("/v1/chat/completions", SimConfig(tokens_per_second=20)),
        ("/api/chat", SimConfig(answer_tokens=1_000_000)),  # unpaced, but long
    ],
)
async def test_client_disconnect_stops_the_generation(path: str, config: SimConfig) -> None:
    body = {**CHAT, "stream": True}
    async with running_sim(config) as url, httpx.AsyncClient(base_url=url, timeout=10) as http:
        async with (
            httpx.AsyncClient(base_url=url) as streaming,
            streaming.stream("POST", path, json=body) as reply,
        ):
            async for _line in reply.aiter_lines():
                break
        stats = await _until(http, lambda s: s["in_flight"] == 0 and s["disconnects"] == 1)
        assert stats["in_flight"] == 0 and stats["disconnects"] == 1
        await asyncio.sleep(0.2)  # a generation that went on would keep sending chunks
        assert (await _stats(http))["chunks_sent"] == stats["chunks_sent"] < 100_000


async def test_runtime_config() -> None:
    async with running_sim(SimConfig()) as url, httpx.AsyncClient(base_url=url) as http:
        changed = await http.post(
            "/_sim/config", json={"fail_rate": 1, "models": ["mistral:7b", "nomic-embed-text"]}
        )
        assert changed.status_code == 200
        assert changed.json()["fail_rate"] == 1.0 and changed.json()["models"] == [
            "mistral:7b",
            "nomic-embed-text:latest",
        ]
        assert [m["name"] for m in (await http.get("/api/tags")).json()["models"]] == [
            "mistral:7b",
            "nomic-embed-text:latest",
        ]
        assert (
            await http.post("/api/generate", json={"model": "mistral:7b", "prompt": "x"})
        ).status_code == 500
        bad = await http.post("/_sim/config", json={"fail_rate": 2})
        assert bad.status_code == 400 and "fail_rate" in bad.json()["error"]
        typo = await http.post("/_sim/config", json={"latency": 5})
        assert typo.status_code == 400
        bad_name = await http.post("/_sim/config", json={"models": ["bad name"]})
        assert bad_name.status_code == 400 and "bad name" in bad_name.json()["error"]
        await http.post("/_sim/reset")
        config = (await http.get("/_sim/config")).json()
        assert config["fail_rate"] == 0 and config["models"] == [
            "llama3.2:latest",
            "qwen2.5:0.5b",
            "all-minilm:latest",
        ]
