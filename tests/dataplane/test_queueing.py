"""Limits and the queue over real HTTP: a backend that holds every request until the test lets it go,
so that who is running and who is waiting is known exactly, never guessed from timing."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import openai
import pytest
from aiohttp import web

from dataplane.settings import DataPlaneSettings
from shared.bus import Bus
from shared.snapshot import BackendView, FrontendView, SnapshotContent
from tests.dataplane.harness import RunningDataPlane, SnapshotWriter, eventually, running_dataplane


@dataclass
class Held:
    """Answers each request only once ``let_go`` allows it; records arrivals and concurrency."""

    url: str = ""
    arrived: list[str] = field(default_factory=list)  # prompts in arrival order
    arrived_at: list[float] = field(default_factory=list)  # time.monotonic() of each arrival
    in_flight: int = 0
    peak: int = 0
    gate: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(0))

    def let_go(self, count: int = 1) -> None:
        for _ in range(count):
            self.gate.release()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.arrived.append(body.get("prompt") or "")
        self.arrived_at.append(time.monotonic())
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await self.gate.acquire()
        finally:
            self.in_flight -= 1
        if request.path.startswith("/v1/"):
            answer = {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "ok"},
                        "finish_reason": "stop",
                    }
                ],
            }
            return web.json_response(answer)
        return web.json_response({"model": body["model"], "response": "ok", "done": True})


@contextlib.asynccontextmanager
async def held_backend() -> AsyncIterator[Held]:
    held = Held()
    app = web.Application()
    app.router.add_post("/api/generate", held.handle)
    app.router.add_post("/v1/chat/completions", held.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    site = web.SockSite(runner, sock)
    await site.start()
    held.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        yield held
    finally:
        held.let_go(1000)
        await runner.cleanup()


@pytest.fixture
async def held() -> AsyncIterator[Held]:
    async with held_backend() as backend:
        yield backend


@pytest.fixture
async def dp(dp_settings: DataPlaneSettings, bus: Bus) -> AsyncIterator[RunningDataPlane]:
    async with running_dataplane(dp_settings, listen_reports=bus) as running:
        yield running


async def _serve(
    writer: SnapshotWriter,
    dp: RunningDataPlane,
    held: Held,
    *,
    parallel: int = 1,
    rate: int = 1000,
    **frontend: object,
) -> None:
    backend = BackendView(
        id="held", base_url=held.url, max_parallel_requests=parallel, rate_limit_requests_threshold=rate
    )
    view = FrontendView(id="f", hostname="*", backends=("held",), **frontend)  # type: ignore[arg-type]
    revision = dp.app.state.revision + 1
    await writer.publish(SnapshotContent(frontends=(view,), backends=(backend,)), revision)
    await dp.wait_revision(revision)


def _generate(client: httpx.AsyncClient, prompt: str) -> asyncio.Task[httpx.Response]:
    body = {"model": "m", "prompt": prompt, "stream": False}
    return asyncio.create_task(client.post("/api/generate", json=body))


async def _queued(dp: RunningDataPlane, count: int) -> None:
    expected = {"held": count} if count else {}
    await eventually(lambda: dp.app.admission.queued() == expected, 15, f"{count} queued")


def _seen(dp: RunningDataPlane, held: Held) -> int:
    """Requests the data plane has sent upstream or queued."""
    return len(held.arrived) + dp.app.admission.queued().get("held", 0)


async def test_requests_over_the_limit_wait_and_go_in_arrival_order(
    dp: RunningDataPlane, writer: SnapshotWriter, held: Held
) -> None:
    await _serve(writer, dp, held, parallel=2)
    async with httpx.AsyncClient(base_url=dp.url, timeout=60) as client:
        tasks = []
        for i in range(5):
            tasks.append(_generate(client, f"p{i}"))
            # One at a time, so that the arrival order at the data plane is the order sent.
            await eventually(lambda i=i: _seen(dp, held) == i + 1, 15, "request arrived")
        assert held.arrived == ["p0", "p1"]
        await _queued(dp, 3)
        await eventually(lambda: any(r.queued == {"held": 3} for r in dp.reports), 10, "queue reported")
        for done in range(3):
            held.let_go()
            await eventually(lambda done=done: len(held.arrived) == 3 + done, 15, "next one sent")
        held.let_go(5)
        answers = await asyncio.gather(*tasks)
    assert held.arrived == ["p0", "p1", "p2", "p3", "p4"]
    assert held.peak == 2
    assert [a.status_code for a in answers] == [200] * 5
    assert "x-ollamaflow-queue-ms" not in answers[0].headers
    assert all(int(a.headers["x-ollamaflow-queue-ms"]) >= 0 for a in answers[2:])
    await _queued(dp, 0)


async def test_a_full_queue_is_503_for_ollama_clients_and_429_for_openai_clients(
    dp: RunningDataPlane, writer: SnapshotWriter, held: Held
) -> None:
    await _serve(writer, dp, held, parallel=1, queue_size=1)
    async with httpx.AsyncClient(base_url=dp.url, timeout=60) as client:
        running = _generate(client, "running")
        await eventually(lambda: held.arrived == ["running"], 15, "first request upstream")
        waiting = _generate(client, "waiting")
        await _queued(dp, 1)
        refused = await client.post("/api/generate", json={"model": "m", "prompt": "x", "stream": False})
        assert refused.status_code == 503
        assert int(refused.headers["retry-after"]) >= 1
        assert set(refused.json()) == {"error"} and "busy" in refused.json()["error"]

        api = openai.AsyncOpenAI(base_url=dp.url + "/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.RateLimitError) as caught:
            await api.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        assert caught.value.status_code == 429
        assert caught.value.code == "rate_limit_exceeded"
        assert int(caught.value.response.headers["retry-after"]) >= 1

        held.let_go(2)
        assert (await running).status_code == 200
        assert (await waiting).status_code == 200
    await eventually(lambda: any(r.rejected_total == 2 for r in dp.reports), 10, "rejections reported")
    assert dp.app.traffic.rejected_total == 2
    assert held.arrived == ["running", "waiting"]  # the refused ones never reached the backend


async def test_a_wait_longer_than_the_frontend_allows_is_refused(
    dp: RunningDataPlane, writer: SnapshotWriter, held: Held
) -> None:
    await _serve(writer, dp, held, parallel=1, queue_timeout_ms=300)
    async with httpx.AsyncClient(base_url=dp.url, timeout=60) as client:
        running = _generate(client, "running")
        await eventually(lambda: held.arrived == ["running"], 15, "first request upstream")
        expired = await client.post("/api/generate", json={"model": "m", "prompt": "x", "stream": False})
        assert expired.status_code == 503
        assert "300 ms" in expired.json()["error"]
        assert expired.headers["retry-after"]
        assert dp.app.admission.queued() == {}
        held.let_go()
        assert (await running).status_code == 200


async def test_no_queue_means_an_immediate_refusal(
    dp: RunningDataPlane, writer: SnapshotWriter, held: Held
) -> None:
    await _serve(writer, dp, held, parallel=1, queue_size=0)
    async with httpx.AsyncClient(base_url=dp.url, timeout=60) as client:
        running = _generate(client, "running")
        await eventually(lambda: held.arrived == ["running"], 15, "first request upstream")
        refused = await client.post("/api/generate", json={"model": "m", "prompt": "x", "stream": False})
        assert refused.status_code == 503
        held.let_go()
        assert (await running).status_code == 200


async def test_a_client_that_gives_up_while_queued_leaves_the_queue_and_holds_no_slot(
    dp: RunningDataPlane, writer: SnapshotWriter, held: Held
) -> None:
    await _serve(writer, dp, held, parallel=1)
    async with httpx.AsyncClient(base_url=dp.url, timeout=60) as client:
        running = _generate(client, "running")
        await eventually(lambda: held.arrived == ["running"], 15, "first request upstream")
        async with httpx.AsyncClient(base_url=dp.url) as impatient:
            leaving = _generate(impatient, "impatient")
            await _queued(dp, 1)
            leaving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await leaving
        # Its connection is closed now; the data plane notices and takes it out of the queue.
        await _queued(dp, 0)
        held.let_go()
        assert (await running).status_code == 200
        gate = dp.app.admission.gates.gate("held")
        await eventually(lambda: gate is not None and gate.in_flight == 0, 15, "slot given back")
        held.let_go()
        after = await client.post("/api/generate", json={"model": "m", "prompt": "after", "stream": False})
        assert after.status_code == 200
    assert held.arrived == ["running", "after"]


async def test_the_rate_limit_spaces_requests_instead_of_refusing_them(
    dp: RunningDataPlane, writer: SnapshotWriter, held: Held
) -> None:
    await _serve(writer, dp, held, parallel=10, rate=1)
    held.let_go(1000)  # answer at once: only the rate holds requests back
    async with httpx.AsyncClient(base_url=dp.url, timeout=60) as client:
        answers = await asyncio.gather(*(_generate(client, f"p{i}") for i in range(3)))
    assert [a.status_code for a in answers] == [200] * 3
    # One token at the start, then one a second: the third cannot start within two seconds of the
    # first being admitted (the second of slack covers the first one's way to the backend).
    assert held.arrived_at[2] - held.arrived_at[0] >= 1.0


async def test_zero_limits_are_no_limits_every_parallel_request_runs_at_once(
    dp: RunningDataPlane, writer: SnapshotWriter, held: Held
) -> None:
    # MaxParallelRequests 0 and RateLimitRequestsThreshold 0 (the defaults): no slot, token or queue
    # holds anything back; with no queue at all (QueueSize 0), a limit would show as a 503 at once.
    await _serve(writer, dp, held, parallel=0, rate=0, queue_size=0)
    count = 60
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(base_url=dp.url, timeout=60, limits=limits) as client:
        tasks = [_generate(client, f"p{i}") for i in range(count)]
        await eventually(lambda: held.in_flight == count, 15, f"{count} requests upstream at once")
        assert dp.app.admission.queued() == {}
        held.let_go(count)
        answers = await asyncio.gather(*tasks)
    assert [a.status_code for a in answers] == [200] * count
    assert held.peak == count and dp.app.traffic.rejected_total == 0
