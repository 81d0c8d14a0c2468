"""A backend process killed under traffic is marked down within its thresholds and comes back when it
is restarted, as the published snapshot shows (simulator as a separate process)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from controlplane.settings import Settings
from ollamaflow.sim import running_sim
from shared.snapshot import Snapshot
from tests.controlplane.conftest import TOKEN
from tests.controlplane.harness import RunningControlPlane, running_controlplane, watch_snapshots
from tests.support.processes import free_port, ollamaflow, wait_ready

pytestmark = pytest.mark.slow


@pytest.fixture
def plane(settings: Settings) -> Iterator[RunningControlPlane]:
    monitoring = dataclasses.replace(
        settings, monitor_backends=True, health_interval=0.2, health_timeout=0.5, inventory_interval=0.5
    )
    with running_controlplane(monitoring) as running:
        yield running


def _healthy(snapshot: Snapshot, ident: str) -> bool | None:
    found = next((b for b in snapshot.content.backends if b.id == ident), None)
    return None if found is None or not found.health_checked else found.healthy


async def _traffic(url: str, stop: asyncio.Event) -> int:
    """Inference requests to the backend until ``stop``; returns how many failed."""
    failures = 0
    async with httpx.AsyncClient(timeout=2) as client:
        while not stop.is_set():
            try:
                resp = await client.post(url + "/api/generate", json={"model": "llama3.2", "prompt": "x"})
                failures += resp.status_code != 200
            except httpx.HTTPError:
                failures += 1
                await asyncio.sleep(0.02)
    return failures


async def test_killed_backend_is_marked_down_and_returns_to_rotation(
    plane: RunningControlPlane, settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = ["sim", "--port", str(port), "--tokens-per-second", "200"]
    async with (
        httpx.AsyncClient(base_url=plane.url, headers={"Authorization": f"Bearer {TOKEN}"}) as admin,
        watch_snapshots(settings.nats_url, settings.bus_namespace) as watch,
    ):
        with ollamaflow(args, tmp_path / "sim1.log") as sim:
            wait_ready(url + "/api/version", sim, tmp_path / "sim1.log")
            body = {"Identifier": "b", "Hostname": "127.0.0.1", "Port": port, "UnhealthyThreshold": 3}
            assert (await admin.put("/v1.0/backends", json=body)).status_code == 201
            up = await watch.next(lambda s: _healthy(s, "b") is True)

            stop = asyncio.Event()
            traffic = asyncio.create_task(_traffic(url, stop))
            await asyncio.sleep(0.3)
            sim.send_signal(signal.SIGKILL)
            sim.wait()
            down = await watch.next(lambda s: _healthy(s, "b") is False, after=up.revision)
            stop.set()
            assert await traffic > 0  # the kill really happened under traffic

        health = (await admin.get("/v1.0/backends/b/health")).json()
        assert (
            health["Healthy"] is False and health["UnhealthySinceUtc"] and health["HealthySinceUtc"] is None
        )
        assert health["ConsecutiveFailures"] >= 3  # never before its UnhealthyThreshold
        assert "connect" in health["LastError"]

        with ollamaflow(args, tmp_path / "sim2.log") as sim:
            wait_ready(url + "/api/version", sim, tmp_path / "sim2.log")
            back = await watch.next(lambda s: _healthy(s, "b") is True, after=down.revision)
            assert back.revision > down.revision
            health = (await admin.get("/v1.0/backends/b/health")).json()
            assert health["Healthy"] is True and health["ConsecutiveSuccesses"] >= 2
            with contextlib.suppress(Exception):
                sim.send_signal(signal.SIGTERM)


async def test_hundreds_of_backends_are_probed_and_published(settings: Settings) -> None:
    monitoring = dataclasses.replace(
        settings, monitor_backends=True, health_interval=2.0, inventory_interval=30
    )
    count = 200
    with running_controlplane(monitoring) as plane:
        async with (
            # 200 writes at once on a 2-core machine that also probes: allow them time to queue.
            httpx.AsyncClient(
                base_url=plane.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
            ) as admin,
            running_sim() as sim,
            watch_snapshots(settings.nats_url, settings.bus_namespace) as watch,
        ):
            port = int(sim.rsplit(":", 1)[1])
            dead = free_port()

            async def create(i: int) -> int:  # every tenth one points where nothing listens
                body = {
                    "Identifier": f"b{i:03d}",
                    "Hostname": "127.0.0.1",
                    "Port": dead if i % 10 == 0 else port,
                }
                return (await admin.put("/v1.0/backends", json=body)).status_code

            assert set(await asyncio.gather(*(create(i) for i in range(count)))) == {201}

            def all_decided(s: Snapshot) -> bool:
                views = s.content.backends
                return len(views) == count and all(
                    b.health_checked and b.healthy == (int(b.id[1:]) % 10 != 0) for b in views
                )

            await watch.next(all_decided, within=60)
