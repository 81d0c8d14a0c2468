"""Passive health over real HTTP: a backend that fails is passed over at once, reported as ejected,
and taken back after a successful trial request once its cool-down is over."""

from __future__ import annotations

import asyncio
import dataclasses
import socket

import httpx

from dataplane.settings import DataPlaneSettings
from ollamaflow.sim import SimConfig, running_sim
from shared.bus import Bus
from shared.snapshot import FrontendView
from tests.dataplane.harness import SnapshotWriter, content, eventually, running_dataplane

BODY = {"model": "llama3.2", "prompt": "x", "stream": False}


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


async def _requests(sim: str) -> int:
    async with httpx.AsyncClient() as client:
        return int((await client.get(sim + "/_sim/stats")).json()["requests_total"])


async def test_repeated_server_errors_eject_a_backend_until_a_trial_succeeds(
    dp_settings: DataPlaneSettings, writer: SnapshotWriter, bus: Bus
) -> None:
    settings = dataclasses.replace(dp_settings, eject_after_errors=3, eject_cooldown=1.0)
    async with (
        running_dataplane(settings, listen_reports=bus) as dp,
        running_sim() as good,
        running_sim(SimConfig(fail_rate=1.0)) as bad,
    ):
        # Without retries the 500s reach the client (a retry would hide them), so ejection is visible.
        frontends = [FrontendView(id="f", hostname="*", backends=("good", "bad"), allow_retries=False)]
        await writer.publish(content({"good": good, "bad": bad}, frontends), 1)
        await dp.wait_revision(1)
        async with httpx.AsyncClient(base_url=dp.url) as client:
            statuses = [(await client.post("/api/generate", json=BODY)).status_code for _ in range(6)]
            assert sorted(statuses) == [200, 200, 200, 500, 500, 500]
            assert await _requests(bad) == 3
            # Ejected: everything goes to the good one now, well within the cool-down.
            for _ in range(6):
                answer = await client.post("/api/generate", json=BODY)
                assert answer.headers["x-ollamaflow-backend"] == "good"
            assert await _requests(bad) == 3
            await eventually(lambda: any("bad" in r.ejected for r in dp.reports), 5, "ejection reported")
            assert "500" in dp.reports[-1].ejected["bad"]

            await client.post(bad + "/_sim/config", json={"fail_rate": 0.0})
            await asyncio.sleep(1.1)  # the cool-down; then one trial request brings it back
            backends = set()
            for _ in range(4):
                answer = await client.post("/api/generate", json=BODY)
                assert answer.status_code == 200
                backends.add(answer.headers["x-ollamaflow-backend"])
            assert backends == {"good", "bad"}
            assert dp.app.breakers.ejected() == {}


async def test_an_unreachable_backend_is_ejected_after_one_failed_connection(
    dp_settings: DataPlaneSettings, writer: SnapshotWriter
) -> None:
    settings = dataclasses.replace(dp_settings, eject_cooldown=60.0)
    async with running_dataplane(settings) as dp, running_sim() as good:
        backends = {"dead": _closed_port_url(), "good": good}
        # Without retries a request that meets the dead backend fails, so ejection is visible.
        frontends = [FrontendView(id="f", hostname="*", backends=("dead", "good"), allow_retries=False)]
        await writer.publish(content(backends, frontends), 1)
        await dp.wait_revision(1)
        async with httpx.AsyncClient(base_url=dp.url) as client:
            first = await client.post("/api/generate", json=BODY)
            assert first.status_code == 502
            assert "dead" in dp.app.breakers.ejected()
            for _ in range(5):
                assert (await client.post("/api/generate", json=BODY)).status_code == 200
