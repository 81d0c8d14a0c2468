"""Proxying to simulated Ollama backends over real HTTP: the official client, streaming as it happens,
cancellation, host matching and the two balancing strategies."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import httpx
import ollama
import pytest

from ollamaflow.sim import running_sim
from shared.snapshot import FrontendView, LoadBalancing
from tests.dataplane.harness import RunningDataPlane, SnapshotWriter, content, eventually

MESSAGES = [{"role": "user", "content": "Tell me about load balancers."}]


async def _serve(
    writer: SnapshotWriter, dp: RunningDataPlane, backends: dict[str, str], **frontend: object
) -> None:
    frontends = [FrontendView(id="f", hostname="*", backends=tuple(backends), **frontend)]  # type: ignore[arg-type]
    revision = dp.app.state.revision + 1
    await writer.publish(content(backends, frontends), revision)
    await dp.wait_revision(revision)


async def _stats(sim: str) -> dict[str, object]:
    async with httpx.AsyncClient() as client:
        return (await client.get(sim + "/_sim/stats")).json()


async def test_official_client_gets_the_same_answers_through_the_data_plane(
    dp: RunningDataPlane, writer: SnapshotWriter
) -> None:
    async with running_sim() as sim:
        await _serve(writer, dp, {"sim": sim})
        direct, through = ollama.AsyncClient(host=sim), ollama.AsyncClient(host=dp.url)
        results = {}
        for name, client in (("direct", direct), ("through", through)):
            chat = await client.chat(model="llama3.2", messages=MESSAGES)
            chat_parts = [
                p async for p in await client.chat(model="llama3.2", messages=MESSAGES, stream=True)
            ]
            gen = await client.generate(model="llama3.2", prompt="Why is the sky blue?")
            gen_parts = [p async for p in await client.generate(model="llama3.2", prompt="Why?", stream=True)]
            embed = await client.embed(model="all-minilm", input=["a", "b"])
            results[name] = (
                chat.message.content,
                "".join(p.message.content for p in chat_parts),
                chat_parts[-1].done,
                gen.response,
                "".join(p.response for p in gen_parts),
                gen_parts[-1].done_reason,
                len(embed.embeddings),
                len(embed.embeddings[0]),
            )
        assert results["through"] == results["direct"]
        assert results["through"][0] and len(chat_parts) > 2
        with pytest.raises(ollama.ResponseError) as caught:
            await through.chat(model="no-such-model", messages=MESSAGES)
        assert caught.value.status_code == 404
        assert "not found" in caught.value.error


async def test_stream_chunks_arrive_while_the_backend_is_still_generating(
    dp: RunningDataPlane, writer: SnapshotWriter
) -> None:
    async with running_sim(tokens_per_second=20, answer_tokens=12) as sim:
        await _serve(writer, dp, {"sim": sim})
        body = {"model": "llama3.2", "messages": MESSAGES}
        async with (
            httpx.AsyncClient(timeout=30) as client,
            client.stream("POST", dp.url + "/api/chat", json=body) as resp,
        ):
            assert resp.headers["content-type"] == "application/x-ndjson"
            assert resp.headers["x-ollamaflow-backend"] == "sim"
            lines = resp.aiter_lines()
            first = json.loads(await anext(lines))
            assert first["done"] is False
            # The first line is here while the backend still has the rest to generate: not buffered.
            stats = await _stats(sim)
            assert stats["in_flight"] == 1
            assert stats["chunks_sent"] < 12
            rest = [json.loads(line) async for line in lines]
        assert rest[-1]["done"] is True
        assert len(rest) >= 11


async def test_a_client_that_disconnects_cancels_the_upstream_request(
    dp: RunningDataPlane, writer: SnapshotWriter
) -> None:
    async with running_sim(tokens_per_second=5, answer_tokens=50) as sim:
        await _serve(writer, dp, {"sim": sim})
        body = {"model": "llama3.2", "messages": MESSAGES}
        async with httpx.AsyncClient(timeout=30) as client:
            async with client.stream("POST", dp.url + "/api/chat", json=body) as resp:
                await anext(resp.aiter_lines())
                assert (await _stats(sim))["in_flight"] == 1
            # Leaving the block closed the connection after one of 50 chunks (10 s of generation).
            await eventually(lambda: dp.app.traffic.in_flight_by_backend() == {}, 5, "data plane released")
            stats = await _stats(sim)
            assert stats["in_flight"] == 0
            assert stats["disconnects"] == 1


async def test_a_client_that_gives_up_on_a_non_streamed_request_cancels_it_too(
    dp: RunningDataPlane, writer: SnapshotWriter
) -> None:
    async with running_sim(latency_ms=10_000) as sim:
        await _serve(writer, dp, {"sim": sim})
        body = {"model": "llama3.2", "prompt": "x", "stream": False}
        async with httpx.AsyncClient() as client:
            sent = asyncio.create_task(client.post(dp.url + "/api/generate", json=body))
            await eventually(
                lambda: dp.app.traffic.in_flight_by_backend() == {"sim": 1}, 5, "request upstream"
            )
            sent.cancel()
            with pytest.raises(asyncio.CancelledError):
                await sent
        await eventually(lambda: dp.app.traffic.in_flight_by_backend() == {}, 5, "data plane released")
        assert (await _stats(sim))["in_flight"] == 0


async def test_frontends_are_matched_by_host_over_http(
    dp: RunningDataPlane, writer: SnapshotWriter, backend_urls: list[str]
) -> None:
    backends = dict(zip(("s0", "s1", "s2"), backend_urls, strict=True))
    frontends = [
        FrontendView(id="a", hostname="a.example", backends=("s0",)),
        FrontendView(id="b", hostname="B.Example", backends=("s1",)),
        FrontendView(id="rest", hostname="*", backends=("s2",)),
    ]
    await writer.publish(content(backends, frontends), 1)
    await dp.wait_revision(1)
    body = {"model": "llama3.2", "prompt": "x", "stream": False}
    async with httpx.AsyncClient(base_url=dp.url) as client:
        for host, expected in [
            ("a.example", "s0"),
            ("A.EXAMPLE:43411", "s0"),
            ("b.example", "s1"),
            ("c.example", "s2"),
            ("127.0.0.1", "s2"),
        ]:
            resp = await client.post("/api/generate", json=body, headers={"Host": host})
            assert resp.status_code == 200, resp.text
            assert resp.headers["x-ollamaflow-backend"] == expected, host


@pytest.mark.parametrize("strategy", ["RoundRobin", "Random"])
async def test_both_strategies_spread_requests_over_three_backends(
    dp: RunningDataPlane, writer: SnapshotWriter, backend_urls: list[str], strategy: LoadBalancing
) -> None:
    backends = dict(zip(("s0", "s1", "s2"), backend_urls, strict=True))
    await _serve(writer, dp, backends, load_balancing=strategy)
    body = {"model": "llama3.2", "prompt": "x", "stream": False}
    async with httpx.AsyncClient(base_url=dp.url, limits=httpx.Limits(max_connections=30)) as client:
        sequential = [
            (await client.post("/api/generate", json=body)).headers["x-ollamaflow-backend"] for _ in range(30)
        ]
        concurrent = await asyncio.gather(*(client.post("/api/generate", json=body) for _ in range(60)))
    together = Counter(sequential) + Counter(r.headers["x-ollamaflow-backend"] for r in concurrent)
    if strategy == "RoundRobin":
        assert sequential[:3] in (["s0", "s1", "s2"], ["s1", "s2", "s0"], ["s2", "s0", "s1"])
        assert all(sequential[i] == sequential[i % 3] for i in range(30))
        assert together == {"s0": 30, "s1": 30, "s2": 30}  # exact, concurrency included
    else:
        assert set(together) == {"s0", "s1", "s2"}
        assert all(n >= 15 for n in together.values()), together  # expected 30 each of 90


async def test_backend_failures_pass_through_as_the_backend_sent_them(
    dp: RunningDataPlane, writer: SnapshotWriter
) -> None:
    async with running_sim(fail_rate=1.0) as failing, running_sim(fail_rate=1.0, fail_mid_stream=True) as mid:
        await _serve(writer, dp, {"failing": failing})
        async with httpx.AsyncClient() as client:
            direct = await client.post(
                failing + "/api/chat", json={"model": "llama3.2", "messages": MESSAGES}
            )
            through = await client.post(
                dp.url + "/api/chat", json={"model": "llama3.2", "messages": MESSAGES}
            )
            assert through.status_code == direct.status_code >= 500
            assert through.json() == direct.json()

            await _serve(writer, dp, {"mid": mid})
            through = await client.post(
                dp.url + "/api/chat", json={"model": "llama3.2", "messages": MESSAGES}
            )
        assert through.status_code == 200
        last = json.loads(through.text.splitlines()[-1])
        assert "error" in last
