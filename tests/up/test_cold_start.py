"""Planes started while the bus or the database is not there yet (as after a reboot where ``up``
brings everything back at once): they wait, say what they wait for, and catch up when it appears."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from ollamaflow.embedded import EmbeddedNats, EmbeddedPostgres
from ollamaflow.sim.server import running_sim
from shared.bus import Bus, BusNames
from tests.dataplane.harness import SnapshotWriter, content, snapshot_bytes
from tests.support.processes import free_port, ollamaflow
from tests.support.signing import SnapshotKeys

pytestmark = pytest.mark.slow

GENERATE = {"model": "llama3.2", "prompt": "hi", "stream": False}


def _env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OLLAMAFLOW_")}
    return env | {f"OLLAMAFLOW_{key.upper()}": value for key, value in settings.items()}


def _wait_exit(server: EmbeddedNats) -> None:
    deadline = time.monotonic() + 10
    while server.exit_code() is None:
        assert time.monotonic() < deadline, "the killed server is still running"
        time.sleep(0.01)


def _tail(log: Path) -> str:
    return log.read_text()[-4000:]


async def _eventually(
    check: Callable[[], Awaitable[bool]], what: str, log: Path, within: float = 30.0
) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if await check():
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} did not happen in {within:.0f} s:\n{_tail(log)}")


async def _publish(url: str, namespace: str, revision: int, backends: dict[str, str]) -> None:
    bus = Bus(url, BusNames(namespace))
    await asyncio.wait_for(bus.connect_forever(retry_every=0.1), 20)
    try:
        await SnapshotWriter(bus).publish(content(backends), revision)
    finally:
        await bus.close()


async def test_a_data_plane_started_without_nats_serves_from_its_cache_and_catches_up(
    tmp_path: Path, bus_namespace: str, snapshot_keys: SnapshotKeys
) -> None:
    cache = tmp_path / "dataplane.snapshot"
    nats_port, port = free_port(), free_port()
    nats = EmbeddedNats(tmp_path / "nats", port=nats_port)
    log = tmp_path / "dataplane.log"
    env = _env(
        nats_url=f"nats://127.0.0.1:{nats_port}",
        snapshot_cache=str(cache),
        bus_namespace=bus_namespace,
        snapshot_poll_interval="0.5",
        snapshot_public_key_files=str(snapshot_keys.public),
    )
    async with running_sim() as sim_a, running_sim() as sim_b, httpx.AsyncClient(timeout=30) as client:
        cache.write_bytes(snapshot_bytes(content({"a": sim_a}), 5))
        url = f"http://127.0.0.1:{port}"

        async def served_by(backend: str) -> bool:
            response = await client.post(url + "/api/generate", json=GENERATE)
            return response.status_code == 200 and response.headers["x-ollamaflow-backend"] == backend

        async def at_revision(revision: int) -> bool:
            body = (await client.get(url + "/readyz")).json()
            return body.get("revision") == revision and body.get("nats") is True

        with ollamaflow(["dataplane", "--host", "127.0.0.1", "--port", str(port)], log, env) as proc:
            # NATS is nowhere: the data plane serves what its cache holds.
            async def ready_from_cache() -> bool:
                response = await client.get(url + "/readyz")
                return response.status_code == 200 and response.json() == {
                    "status": "ok",
                    "revision": 5,
                    "nats": False,
                }

            await _eventually(ready_from_cache, "ready from the cache", log)
            assert await served_by("a")
            try:
                # NATS appears on the address it was given, with a newer snapshot.
                await asyncio.to_thread(nats.start)
                await _publish(nats.url, bus_namespace, 6, {"b": sim_b})
                await _eventually(lambda: at_revision(6), "revision 6 from NATS", log)
                assert await served_by("b")

                # A quick NATS restart: the data plane follows the snapshot again.
                restart_mark = len(log.read_text())
                assert nats.pid is not None
                os.kill(nats.pid, signal.SIGKILL)
                await asyncio.to_thread(_wait_exit, nats)
                await asyncio.to_thread(nats.relaunch)
                await _publish(nats.url, bus_namespace, 7, {"a": sim_a})
                await _eventually(lambda: at_revision(7), "revision 7 after the NATS restart", log)
                assert await served_by("a")
                assert "NATS is back; following the snapshot again" in log.read_text()[restart_mark:]
            finally:
                await asyncio.to_thread(nats.stop)
            assert proc.poll() is None
    assert "Traceback" not in log.read_text()


async def test_a_control_plane_started_without_postgres_and_nats_waits_then_becomes_ready(
    tmp_path: Path, bus_namespace: str
) -> None:
    pg_port, nats_port, port = free_port(), free_port(), free_port()
    log = tmp_path / "controlplane.log"
    env = _env(
        database_url=f"postgresql+psycopg://postgres@127.0.0.1:{pg_port}/postgres",
        nats_url=f"nats://127.0.0.1:{nats_port}",
        admin_tokens="cold-start-token",
        bus_namespace=bus_namespace,
    )
    postgres = EmbeddedPostgres(tmp_path / "pg", port=pg_port, durable=False)
    nats = EmbeddedNats(tmp_path / "nats", port=nats_port)
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": "Bearer cold-start-token"}
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as client:
        with ollamaflow(["controlplane", "--host", "127.0.0.1", "--port", str(port)], log, env) as proc:
            try:

                async def alive() -> bool:
                    return (await client.get("/healthz")).status_code == 200

                await _eventually(alive, "/healthz answering", log)
                ready = await client.get("/readyz")
                assert ready.status_code == 503
                assert ready.json()["detail"].startswith("waiting for the database: ")
                listing = await client.get("/v1.0/frontends")
                assert listing.status_code == 503
                assert "waiting for the database" in listing.json()["Description"]

                await asyncio.to_thread(postgres.start)
                # No more than one warning every 5 s about either, for as long as they were missing.
                text, waited = log.read_text(), time.monotonic() - started
                assert 1 <= text.count("cannot migrate the database yet") <= waited / 5 + 1
                assert text.count("cannot connect to NATS") <= waited / 5 + 1

                async def waiting_for_nats() -> bool:
                    response = await client.get("/readyz")
                    return response.status_code == 503 and response.json()["detail"].startswith(
                        "waiting for NATS"
                    )

                await _eventually(waiting_for_nats, "the schema migrated, NATS still missing", log)
                created = await client.put("/v1.0/backends", json={"Identifier": "b1"})
                assert created.status_code == 201, created.text

                await asyncio.to_thread(nats.start)

                async def ready_now() -> bool:
                    return (await client.get("/readyz")).status_code == 200

                await _eventually(ready_now, "ready with Postgres and NATS", log)
                assert proc.poll() is None
            finally:
                await asyncio.to_thread(nats.stop)
                await asyncio.to_thread(postgres.stop)
    assert "Traceback" not in log.read_text()
