"""A request's attempts through a whole in-memory data plane (no socket): however an attempt ends, its
backend's slot comes back (nothing left in flight, a one-slot backend takes the next request at once)
and its breaker hears one verdict (two server errors eject here, so a count of two shows)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import httpx
import pytest

from dataplane.app import DataPlane
from dataplane.settings import DataPlaneSettings
from dataplane.upstream.origin import Origin
from dataplane.upstream.transport import PoolTimeout
from ollamaflow.sim import SimConfig, create_app
from shared.memory_bus import MemoryBroker, MemoryBus
from tests.dataplane.harness import SnapshotWriter, content, eventually
from tests.support.asgi_upstream import AsgiResponse, AsgiUpstream
from tests.support.secrets import TEST_KEYRING
from tests.support.signing import SnapshotKeys

BACKENDS = ("a", "bad", "broken", "dead", "pool", "v")
GENERATE = {"model": "llama3.2", "prompt": "x", "stream": False}


async def _broken_500(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    """A 500 whose body breaks off before its end."""
    await receive()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"200")]
    await send({"type": "http.response.start", "status": 500, "headers": headers})
    await send({"type": "http.response.body", "body": b'{"error":', "more_body": True})
    raise RuntimeError("the backend died mid-answer")


async def _dies_before_answering(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    await receive()
    raise RuntimeError("the backend died before answering")


class PoolFull(AsgiUpstream):
    """No pooled connection ever comes free for ``sim-pool``: no fault of that backend's."""

    async def request(
        self, backend_id: str, origin: Origin, head: bytes, body: bytes, progress_timeout: float
    ) -> AsgiResponse:
        if origin.host == "sim-pool":
            raise PoolTimeout(f"no upstream connection for backend {backend_id} came free")
        return await super().request(backend_id, origin, head, body, progress_timeout)


class Plane:
    def __init__(self, dp: DataPlane, writer: SnapshotWriter, http: httpx.AsyncClient) -> None:
        self.dp, self.writer, self.http = dp, writer, http

    async def publish(self, backends: dict[str, str], revision: int = 1, **options: object) -> None:
        await self.writer.publish(content(backends, **options), revision)
        await eventually(lambda: self.dp.state.revision == revision, 5, f"revision {revision} applied")

    def idle(self) -> bool:
        """Nothing in flight, no admission slot taken."""
        gates = self.dp.admission.gates
        taken = [g.in_flight for i in BACKENDS if (g := gates.gate(i)) is not None and g.in_flight]
        return not self.dp.traffic.in_flight and not taken


@pytest.fixture
async def plane(snapshot_keys: SnapshotKeys) -> AsyncIterator[Plane]:
    broker = MemoryBroker()
    apps = {
        ("sim-a", 11434): create_app(SimConfig(host="0.0.0.0")),
        ("sim-bad", 11434): create_app(SimConfig(host="0.0.0.0", fail_rate=1.0)),
        ("sim-broken", 11434): _broken_500,
        ("sim-dead", 11434): _dies_before_answering,
        ("sim-v", 8000): create_app(SimConfig(host="0.0.0.0", format="openai")),
    }
    settings = DataPlaneSettings(
        snapshot_public_key_files=(snapshot_keys.public,),
        dataplane_id="dp-" + uuid.uuid4().hex[:8],
        report_interval=0.2,
        snapshot_poll_interval=0.5,
        secrets=TEST_KEYRING,
        access_log=False,
        eject_after_errors=2,
    )
    dp = DataPlane(settings, bus=MemoryBus(broker), upstream=PoolFull(apps))  # type: ignore[arg-type]
    writer_bus = MemoryBus(broker)
    await writer_bus.connect()
    await dp.startup()
    transport = httpx.ASGITransport(app=dp)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://dp") as http:
        yield Plane(dp, SnapshotWriter(writer_bus), http)
    await dp.shutdown()
    await writer_bus.close()


async def test_a_5xx_whose_body_breaks_counts_one_server_error(plane: Plane) -> None:
    await plane.publish({"broken": "http://sim-broken:11434"}, max_parallel_requests=1)
    answer = await plane.http.post("/api/generate", json=GENERATE)
    assert answer.status_code == 502 and "error" in answer.json()
    assert plane.idle()
    assert plane.dp.breakers.ejected() == {}  # one error of the two that eject
    await plane.http.post("/api/generate", json=GENERATE)
    assert "broken" in plane.dp.breakers.ejected()
    assert plane.idle()


async def test_failed_attempts_give_their_slots_back_and_fail_over(plane: Plane) -> None:
    await plane.publish(
        {"bad": "http://sim-bad:11434", "broken": "http://sim-broken:11434", "a": "http://sim-a:11434"},
        max_parallel_requests=1,
    )
    for _ in range(4):
        answer = await plane.http.post("/api/generate", json=GENERATE)
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-ollamaflow-backend"] == "a"
        assert "x-ollamaflow-queue-ms" not in answer.headers  # no slot was left taken
        assert plane.idle()
    assert set(plane.dp.breakers.ejected()) <= {"bad", "broken"}


async def test_a_local_answer_gives_its_slot_and_trial_back(plane: Plane) -> None:
    await plane.publish({"v": "http://sim-v:8000"}, api_format="OpenAI", max_parallel_requests=1)
    plane.dp.breakers.unreachable("v", "refused")
    plane.dp.breakers.cooldown = 0.0  # its trial request may go at once
    for _ in range(2):  # the second finds the trial given back
        answer = await plane.http.post("/api/generate", json={"model": "llama3.2:latest"})
        assert answer.status_code == 200 and answer.json()["done_reason"] == "load"
        assert plane.idle()
    assert "v" in plane.dp.breakers.ejected()  # a local answer says nothing of the backend


async def test_no_answer_is_one_server_error(plane: Plane) -> None:
    await plane.publish({"dead": "http://sim-dead:11434"}, max_parallel_requests=1)
    answer = await plane.http.post("/api/generate", json=GENERATE)
    assert answer.status_code == 502 and "error" in answer.json()
    assert plane.idle() and plane.dp.breakers.ejected() == {}
    await plane.http.post("/api/generate", json=GENERATE)
    assert "dead" in plane.dp.breakers.ejected()
    assert plane.idle()


async def test_a_full_connection_pool_gives_the_slot_and_the_trial_back(plane: Plane) -> None:
    await plane.publish({"pool": "http://sim-pool:11434"}, max_parallel_requests=1)
    plane.dp.breakers.unreachable("pool", "refused")
    plane.dp.breakers.cooldown = 0.0  # its trial request may go at once
    for _ in range(3):  # each finds the trial given back, and the one slot free
        answer = await plane.http.post("/api/generate", json=GENERATE)
        assert answer.status_code == 504 and "error" in answer.json()
        assert plane.idle()
    assert plane.dp.breakers.ejections == {"pool": 1}  # our pool's fault, not the backend's
