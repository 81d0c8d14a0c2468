"""Two control-plane replicas on one Postgres and one NATS: one leads (probes, publishes, answers model
requests), both serve the admin API, a follower's writes are published, and the follower takes over
when the leader stops."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from controlplane.admin.service import FrontendService
from controlplane.clock import Clock
from controlplane.db import Database
from controlplane.settings import Settings
from ollamaflow.cli import app
from ollamaflow.sim import running_sim
from shared.bus import Bus, BusNames
from shared.snapshot import Snapshot
from shared.wire.models import ModelRequest, decode_reply, encode
from tests.controlplane.conftest import TOKEN
from tests.controlplane.harness import RunningControlPlane, eventually, running_controlplane, watch_snapshots
from tests.controlplane.monitoring_support import backend, port_of, sim_stats
from tests.support.processes import free_port, ollamaflow, wait_ready

HEADERS = {"Authorization": f"Bearer {TOKEN}"}


# Long leases: leadership must only move when a test stops the leader (cleanly: an immediate
# takeover), never because a loaded machine delayed a renewal. Crashes are tested in test_lease.
TTL = 10.0


def _replica(settings: Settings, name: str, ttl: float = TTL) -> Settings:
    return dataclasses.replace(settings, replica_id=name, lease_ttl=ttl, lease_renew=min(ttl / 4, 1.0))


@contextlib.contextmanager
def _two_replicas(
    settings: Settings, ttl: float = TTL
) -> Iterator[tuple[RunningControlPlane, RunningControlPlane]]:
    """Replica "a", leading once it has the lease, then replica "b"."""
    with running_controlplane(_replica(settings, "a", ttl)) as first:
        deadline = time.monotonic() + 10
        while not first.plane.lease.is_leader:
            assert time.monotonic() < deadline, "replica a never took the lease"
            time.sleep(0.02)
        with running_controlplane(_replica(settings, "b", ttl)) as second:
            yield first, second


def _client(replica: RunningControlPlane) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=replica.url, headers=HEADERS, timeout=10)


async def test_one_replica_probes_and_publishes_and_a_follower_s_writes_reach_the_snapshot(
    monitoring: Settings,
) -> None:
    with _two_replicas(monitoring) as (first, second):
        async with (
            running_sim() as sim,
            watch_snapshots(monitoring.nats_url, monitoring.bus_namespace) as watch,
            _client(first) as leader,
            _client(second) as follower,
        ):
            await eventually(lambda: second.plane.lease.leader is not None, what="b naming the leader")
            assert first.plane.lease.is_leader and not second.plane.lease.is_leader
            for client, name, leads in ((leader, "a", True), (follower, "b", False)):
                view = (await client.get("/v1.0/cluster")).json()
                assert view["Replica"] == name and view["IsLeader"] is leads
                assert view["Leader"] == "a" and view["LeaderAddress"] and view["LeaseTtl"] == TTL
                ready = (await client.get("/readyz")).json()
                assert ready == {
                    "status": "ok",
                    "replica": name,
                    "role": "leader" if leads else "follower",
                    "leader": "a",
                }

            # A write on the follower: the leader probes the new backend and publishes it.
            body = {"Identifier": "sim", "Hostname": "127.0.0.1", "Port": port_of(sim)}
            assert (await follower.put("/v1.0/backends", json=body)).status_code == 201
            snapshot = await watch.next(lambda s: (b := backend(s, "sim")) is not None and b.healthy)
            assert second.plane.monitor is None and second.plane.publisher is None

            # One prober: over a while, no more probes than one schedule allows (0.2 s apart).
            before, started = (await sim_stats(sim))["by_path"].get("/", 0), time.monotonic()
            await asyncio.sleep(2.0)
            probes = (await sim_stats(sim))["by_path"].get("/", 0) - before
            allowed = (time.monotonic() - started) / monitoring.health_interval + 2
            assert 0 < probes <= allowed, (probes, allowed)

            # What the leader observes is shown by the leader; the follower names it.
            assert (await leader.get("/v1.0/backends/health")).json()[0]["Healthy"] is True
            for path in ("/v1.0/backends/health", "/v1.0/backends/sim/health", "/v1.0/models", "/v1.0/pulls"):
                answer = await follower.get(path)
                assert answer.status_code == 503, path
                assert "a (http://" in answer.json()["Description"]
            started = await follower.post("/v1.0/frontends/any/pull", json={"Model": "m"})
            assert started.status_code == 503 and "a (http://" in started.json()["Description"]
            argv = ["status", "--json", "--url", second.url, "--token", TOKEN]
            shown = await asyncio.to_thread(CliRunner().invoke, app, argv)
            parts = json.loads(shown.stdout)
            assert parts["Cluster"]["IsLeader"] is False and "a (http://" in parts["Backends"]["Error"]

            # Writes on either replica land in the snapshot, in order.
            revision = snapshot.revision
            for client, ident in ((follower, "f-b"), (leader, "f-a"), (follower, "f-b2")):
                created = await client.put(
                    "/v1.0/frontends",
                    json={"Identifier": ident, "Hostname": f"{ident}.test", "Backends": ["sim"]},
                )
                assert created.status_code == 201
                found = await watch.next(lambda s, i=ident: _has_frontend(s, i), after=revision)
                revision = found.revision

            # The follower shows the leader's publishing, as the lease carries it.
            await eventually(
                lambda: second.plane.publish_status.revision >= revision,
                what="the follower seeing the revision",
            )
            assert second.plane.publish_status.last_error == ""


def _has_frontend(snapshot: Snapshot, ident: str) -> bool:
    return any(f.id == ident for f in snapshot.content.frontends)


async def test_the_follower_takes_over_when_the_leader_stops(settings: Settings) -> None:
    async with watch_snapshots(settings.nats_url, settings.bus_namespace) as watch:
        with contextlib.ExitStack() as leader_running:
            second = leader_running.enter_context(running_controlplane(_replica(settings, "b")))
            await eventually(lambda: second.plane.lease.is_leader, what="b leading")
            published = await watch.next()
            with running_controlplane(_replica(settings, "a")) as first:
                assert not first.plane.lease.is_leader
                leader_running.close()  # "b" stops cleanly (SIGTERM): it releases the lease
                stopped = time.monotonic()
                await eventually(lambda: first.plane.lease.is_leader, within=5, what="a leading")
                print(f"takeover after a clean stop: {time.monotonic() - stopped:.2f} s")
                async with _client(first) as admin:
                    created = await admin.put("/v1.0/backends", json={"Identifier": "later"})
                    assert created.status_code == 201
                await watch.next(
                    lambda s: any(b.id == "later" for b in s.content.backends), after=published.revision
                )


@contextlib.asynccontextmanager
async def _slow_model_lists(delay: float) -> AsyncIterator[int]:
    """An Ollama-like backend whose health probe answers at once but whose model lists take
    ``delay`` seconds (as a busy remote server's may); yields its port."""
    tags = b'{"models": [{"name": "llama3.2:latest", "size": 1}]}'

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while head := await reader.readuntil(b"\r\n\r\n"):
                path = head.split(b" ", 2)[1]
                body = b"ok"
                if path in (b"/api/tags", b"/api/ps"):
                    await asyncio.sleep(delay)
                    body = tags if path == b"/api/tags" else b'{"models": []}'
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def test_a_new_leader_carries_health_and_models_over(monitoring: Settings) -> None:
    """The takeover publishes nothing that the new leader has not observed yet: the backend stays
    healthy with its models in every snapshot while the new leader's first reads are under way."""
    async with (
        _slow_model_lists(1.0) as port,
        watch_snapshots(monitoring.nats_url, monitoring.bus_namespace) as watch,
    ):
        with contextlib.ExitStack() as leader_running:
            first = leader_running.enter_context(running_controlplane(_replica(monitoring, "a")))
            await eventually(lambda: first.plane.lease.is_leader, what="a leading")
            async with _client(first) as admin:
                # Probes on a loaded machine may be slow: only the takeover may not change its health.
                body = {
                    "Identifier": "slow",
                    "Hostname": "127.0.0.1",
                    "Port": port,
                    "HealthCheckTimeoutMs": 5000,
                    "UnhealthyThreshold": 100,
                }
                assert (await admin.put("/v1.0/backends", json=body)).status_code == 201
            settled = await watch.next(
                lambda s: (b := backend(s, "slow")) is not None and b.healthy and b.models_known
            )
            with running_controlplane(_replica(monitoring, "b")) as second:
                leader_running.close()
                await eventually(lambda: second.plane.lease.is_leader, within=5, what="b leading")
                await eventually(
                    lambda: (
                        (m := second.plane.monitor) is not None
                        and (i := m.inventory.get("slow")) is not None
                        and i.refreshed is not None
                    ),
                    what="b reading the backend's models itself",
                )
                async with _client(second) as admin:
                    health = (await admin.get("/v1.0/backends/slow/health")).json()
                assert health["Healthy"] is True and health["Models"] == ["llama3.2:latest"]
        for snapshot in watch.seen:
            if snapshot.revision > settled.revision:
                view = backend(snapshot, "slow")
                assert view is not None and view.healthy and view.models == ("llama3.2:latest",), snapshot


async def test_required_models_edits_from_many_writers_are_never_lost(settings: Settings) -> None:
    """Pulls that add to RequiredModels (answered by the leader), the atomic edit itself from a
    second connection pool, and PATCHes of other fields through both replicas, all at once."""
    with _two_replicas(settings) as (first, second):
        async with _client(first) as leader, _client(second) as follower:
            assert (
                await leader.put("/v1.0/backends", json={"Identifier": "o", "Hostname": "127.0.0.1"})
            ).status_code == 201
            frontend = {
                "Identifier": "f",
                "Backends": ["o"],
                "AllowModelManagement": True,
                "PullAddsRequiredModels": True,
            }
            assert (await follower.put("/v1.0/frontends", json=frontend)).status_code == 201
            await eventually(lambda: first.plane.models is not None and first.plane.models.serving)
            # The leader's monitor knows the backend (it loads the configuration after the write).
            await eventually(lambda: first.plane.monitor is not None and "o" in first.plane.monitor.targets)

            bus = Bus(settings.nats_url, BusNames(settings.bus_namespace), client_name="test-dataplane")
            await bus.connect()
            other_pool = Database(settings.database_url)
            service = FrontendService(other_pool, clock=Clock(), on_change=lambda: None)
            try:

                async def pull(model: str) -> None:
                    ask = ModelRequest(action="pull", frontend_id="f", model=model)
                    reply = decode_reply(await bus.request(bus.names.models_subject, encode(ask), wait=20))
                    # Monitoring is off: nothing is pulled, but the model is required from now on.
                    assert reply.status == 503 and "required model" in reply.error, reply

                async def patch(client: httpx.AsyncClient, n: int) -> None:
                    answer = await client.patch("/v1.0/frontends/f", json={"Name": f"name {n}"})
                    assert answer.status_code == 200, answer.text

                pulled = [f"pulled-{n}" for n in range(20)]
                edited = [f"edited-{n}" for n in range(20)]
                # A task group, not gather: after a failure nothing may go on holding the row lock
                # (an orphaned edit on a closed pool would block every later test's TRUNCATE).
                async with asyncio.TaskGroup() as group:
                    for m in pulled:
                        group.create_task(pull(m))
                    for m in edited:
                        group.create_task(service.edit_required("f", m, present=True))
                    for n in range(20):
                        group.create_task(patch(leader if n % 2 else follower, n))
                required = (await follower.get("/v1.0/frontends/f")).json()["RequiredModels"]
                assert sorted(required) == sorted(pulled + edited)

                # Taking out is atomic too, and leaves the others.
                async with asyncio.TaskGroup() as group:
                    for m in edited:
                        group.create_task(service.edit_required("f", m, present=False))
                required = (await leader.get("/v1.0/frontends/f")).json()["RequiredModels"]
                assert sorted(required) == sorted(pulled)
            finally:
                await other_pool.close()
                await bus.close()


@pytest.mark.slow
def test_sigterm_hands_the_lease_over_at_once_while_connections_still_drain(
    settings: Settings, tmp_path: Path
) -> None:
    """Two ``ollamaflow controlplane`` processes with a 20 s lease: the leader gets SIGTERM while a
    pull stream holds a connection open (so uvicorn is still draining); the other leads long before
    the lease could have expired, and before the old leader has exited."""
    env = {
        "OLLAMAFLOW_DATABASE_URL": settings.database_url,
        "OLLAMAFLOW_ADMIN_TOKENS": ",".join(settings.admin_tokens),
        "OLLAMAFLOW_NATS_URL": settings.nats_url,
        "OLLAMAFLOW_BUS_NAMESPACE": settings.bus_namespace,
        "OLLAMAFLOW_MONITOR_BACKENDS": "false",
        "OLLAMAFLOW_LEASE_TTL": "20",
        "OLLAMAFLOW_LEASE_RENEW": "2",
    }
    ports = {"a": free_port(), "b": free_port()}
    with contextlib.ExitStack() as stack:
        procs = {}
        for name, port in ports.items():
            log = tmp_path / f"{name}.log"
            proc = stack.enter_context(
                ollamaflow(
                    ["controlplane", "--port", str(port)], log, env | {"OLLAMAFLOW_CONTROLPLANE_ID": name}
                )
            )
            wait_ready(f"http://127.0.0.1:{port}/readyz", proc, log, timeout=60)
            procs[name] = proc

        def leads(name: str) -> bool:
            url = f"http://127.0.0.1:{ports[name]}/v1.0/cluster"
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(url, headers=HEADERS, timeout=2).json()["IsLeader"] is True
            return False

        deadline = time.monotonic() + 30
        while not (leads("a") or leads("b")):
            assert time.monotonic() < deadline, "nobody leads"
            time.sleep(0.1)
        leader, other = ("a", "b") if leads("a") else ("b", "a")
        with httpx.stream(
            "GET", f"http://127.0.0.1:{ports[leader]}/v1.0/pulls/stream", headers=HEADERS, timeout=30
        ) as stream:
            assert stream.status_code == 200
            procs[leader].send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            while not leads(other):
                assert time.monotonic() - signalled < 5, "the lease was not handed over"
                time.sleep(0.05)
            took = time.monotonic() - signalled
            assert procs[leader].poll() is None  # still draining its connections
        print(f"takeover after SIGTERM with a connection open: {took:.2f} s")
