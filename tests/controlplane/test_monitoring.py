"""Health probes and model inventory against real simulators, Postgres and NATS."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses

import httpx
import psycopg
from sqlalchemy.engine import make_url

from controlplane.settings import Settings
from ollamaflow.sim import running_sim
from shared.bus import Bus, BusNames
from shared.snapshot import Snapshot
from shared.wire.reports import DataPlaneReport, encode_report
from tests.controlplane.conftest import TOKEN
from tests.controlplane.harness import eventually, running_controlplane, watch_snapshots
from tests.controlplane.monitoring_support import (
    backend,
    port_of,
    post_json,
    sim_stats,
    slow_health_endpoint,
)
from tests.support.processes import free_port


async def test_a_new_backend_is_probed_at_once_and_its_models_are_published(
    probing_admin: httpx.AsyncClient, monitoring: Settings
) -> None:
    dead = free_port()  # nothing listens here
    async with (
        running_sim(models=("llama3.2:latest", "qwen2.5:0.5b")) as sim,
        watch_snapshots(monitoring.nats_url, monitoring.bus_namespace) as watch,
    ):
        await post_json(sim + "/api/generate", json={"model": "llama3.2", "prompt": "x", "stream": False})
        for ident, port in (("up", port_of(sim)), ("down", dead)):
            resp = await probing_admin.put(
                "/v1.0/backends", json={"Identifier": ident, "Hostname": "127.0.0.1", "Port": port}
            )
            assert resp.status_code == 201, resp.text

        def settled(s: Snapshot) -> bool:
            up, down = backend(s, "up"), backend(s, "down")
            return bool(
                up and down and up.healthy and up.models_known and down.health_checked and not down.healthy
            )

        snapshot = await watch.next(settled)
        up = backend(snapshot, "up")
        assert up is not None and up.health_checked
        assert up.models == ("llama3.2:latest", "qwen2.5:0.5b")
        assert [m.name for m in up.models_loaded] == ["llama3.2:latest"]
        assert up.models_loaded[0].expires_at

        health = {b["Identifier"]: b for b in (await probing_admin.get("/v1.0/backends/health")).json()}
        assert health["up"]["Healthy"] is True and health["up"]["HealthySinceUtc"]
        assert health["up"]["UnhealthySinceUtc"] is None and health["up"]["Uptime"].startswith("00:00:")
        assert health["down"]["Healthy"] is False and health["down"]["Downtime"]
        assert "connect" in health["down"]["LastError"]
        assert health["up"]["ProbeLatencyMs"] > 0 and health["down"]["ProbeLatencyMs"] is None
        one = (await probing_admin.get("/v1.0/backends/down/health")).json()
        assert one["Identifier"] == "down" and one["ConsecutiveFailures"] >= 1
        assert (await probing_admin.get("/v1.0/backends/nope/health")).status_code == 404

        models = {m["Name"]: m for m in (await probing_admin.get("/v1.0/models")).json()}
        assert models["llama3.2:latest"]["AvailableOn"] == ["up"]
        assert [m["Backend"] for m in models["llama3.2:latest"]["LoadedOn"]] == ["up"]
        assert models["qwen2.5:0.5b"]["LoadedOn"] == []


async def test_a_changed_address_starts_over_and_a_deleted_backend_stops_being_probed(
    probing_admin: httpx.AsyncClient, monitoring: Settings
) -> None:
    async with (
        running_sim() as first,
        running_sim(format="openai", models=("gpt-sim",)) as second,
        watch_snapshots(monitoring.nats_url, monitoring.bus_namespace) as watch,
    ):
        await probing_admin.put(
            "/v1.0/backends", json={"Identifier": "b", "Hostname": "127.0.0.1", "Port": port_of(first)}
        )
        s1 = await watch.next(lambda s: (b := backend(s, "b")) is not None and b.healthy and b.models_known)
        resp = await probing_admin.patch(
            "/v1.0/backends/b",
            json={"Port": port_of(second), "ApiFormat": "OpenAI", "HealthCheckUrl": "/v1/models"},
        )
        assert resp.status_code == 200
        s2 = await watch.next(
            lambda s: (b := backend(s, "b")) is not None and b.healthy and b.models == ("gpt-sim",),
            after=s1.revision,
        )
        assert backend(s2, "b").models_loaded == ()  # type: ignore[union-attr]
        stats_before = (await sim_stats(second))["requests_total"]
        assert (await probing_admin.delete("/v1.0/backends/b")).status_code == 204
        await watch.next(lambda s: backend(s, "b") is None, after=s2.revision)
        # Let in-flight probes land, then nothing more may come.
        await asyncio.sleep(0.5)
        settled = (await sim_stats(second))["requests_total"]
        await asyncio.sleep(0.8)
        assert (await sim_stats(second))["requests_total"] == settled
        assert settled >= stats_before


async def test_a_restarted_control_plane_keeps_the_published_health(monitoring: Settings) -> None:
    async with slow_health_endpoint(0.3) as port, contextlib.AsyncExitStack() as stack:
        with running_controlplane(monitoring) as first:
            # The bus bucket exists once a control plane ran: watch from here on.
            watch = await stack.enter_async_context(
                watch_snapshots(monitoring.nats_url, monitoring.bus_namespace)
            )
            async with httpx.AsyncClient(
                base_url=first.url, headers={"Authorization": f"Bearer {TOKEN}"}
            ) as admin:
                body = {"Identifier": "b", "Hostname": "127.0.0.1", "Port": port, "ApiFormat": "OpenAI"}
                assert (await admin.put("/v1.0/backends", json=body)).status_code == 201
            healthy = await watch.next(lambda s: (b := backend(s, "b")) is not None and b.healthy)
        with running_controlplane(monitoring) as second:
            async with httpx.AsyncClient(
                base_url=second.url, headers={"Authorization": f"Bearer {TOKEN}"}
            ) as admin:

                async def probed_twice() -> bool:
                    health = (await admin.get("/v1.0/backends/b/health")).json()
                    return health["ConsecutiveSuccesses"] >= 2

                await eventually(probed_twice, what="the new replica's own probes")
            # Its probes take 0.3 s, yet no snapshot in between said "not healthy".
            later = [backend(s, "b") for s in watch.seen if s.revision > healthy.revision]
            assert all(b is not None and b.healthy and b.health_checked for b in later)


async def test_a_hanging_backend_does_not_slow_the_probes_of_the_others(monitoring: Settings) -> None:
    settings = dataclasses.replace(monitoring, health_interval=0.1, health_timeout=1.0)
    with running_controlplane(settings) as plane:
        async with (
            slow_health_endpoint(60) as stuck,
            running_sim() as sim,
            httpx.AsyncClient(base_url=plane.url, headers={"Authorization": f"Bearer {TOKEN}"}) as admin,
        ):
            for ident, port in (("stuck", stuck), ("fine", port_of(sim))):
                body = {"Identifier": ident, "Hostname": "127.0.0.1", "Port": port, "UnhealthyThreshold": 99}
                assert (await admin.put("/v1.0/backends", json=body)).status_code == 201

            async def counts() -> tuple[int, int]:
                health = {b["Identifier"]: b for b in (await admin.get("/v1.0/backends/health")).json()}
                return health["stuck"]["ConsecutiveFailures"], health["fine"]["ConsecutiveSuccesses"]

            async def three_timeouts() -> bool:
                return (await counts())[0] >= 3

            await eventually(three_timeouts, within=20, what="three timed-out probes")
            failures, successes = await counts()
            # Probed one after the other, "fine" would get one probe per timeout of "stuck".
            assert successes >= 3 * failures, (failures, successes)


async def test_a_backends_own_probe_interval_wins_and_changing_it_keeps_the_health(
    monitoring: Settings,
) -> None:
    settings = dataclasses.replace(monitoring, health_interval=600)
    with running_controlplane(settings) as plane:
        async with (
            running_sim() as sim,
            httpx.AsyncClient(base_url=plane.url, headers={"Authorization": f"Bearer {TOKEN}"}) as admin,
        ):
            body = {
                "Identifier": "b",
                "Hostname": "127.0.0.1",
                "Port": port_of(sim),
                "HealthCheckIntervalMs": 100,
            }
            assert (await admin.put("/v1.0/backends", json=body)).status_code == 201

            async def probes(at_least: int) -> dict | None:
                health = (await admin.get("/v1.0/backends/b/health")).json()
                return health if health["ConsecutiveSuccesses"] >= at_least else None

            await eventually(lambda: probes(3), what="three probes at the backend's own interval")
            before = await probes(3)
            assert before is not None
            resp = await admin.patch("/v1.0/backends/b", json={"HealthCheckIntervalMs": 150})
            assert resp.status_code == 200
            await eventually(
                lambda: probes(before["ConsecutiveSuccesses"] + 2), what="probes after the change"
            )
            after = await probes(1)
            assert after is not None and after["Healthy"]
            assert after["HealthySinceUtc"] == before["HealthySinceUtc"]  # re-scheduled, not started over


async def test_active_requests_come_from_the_live_dataplanes_reports(
    probing_admin: httpx.AsyncClient, monitoring: Settings
) -> None:
    assert (
        await probing_admin.put(
            "/v1.0/backends", json={"Identifier": "b", "Hostname": "127.0.0.1", "Port": free_port()}
        )
    ).status_code == 201
    bus = Bus(monitoring.nats_url, BusNames(monitoring.bus_namespace), client_name="test-dataplane")
    await bus.connect()
    try:
        for ident, count in (("dp1", 3), ("dp2", 4)):
            await bus.publish_report(
                encode_report(DataPlaneReport(id=ident, in_flight={"b": count, "other": 9}))
            )

        async def seven() -> bool:
            return (await probing_admin.get("/v1.0/backends/b/health")).json()["ActiveRequests"] == 7

        await eventually(seven, what="in-flight counts summed over the data planes")
        listed = (await probing_admin.get("/v1.0/backends/health")).json()
        assert [b["ActiveRequests"] for b in listed] == [7]
    finally:
        await bus.close()


async def test_a_header_that_cannot_be_sent_makes_the_backend_unhealthy_with_the_reason(
    probing_admin: httpx.AsyncClient,
) -> None:
    async with running_sim() as sim:
        body = {"Identifier": "b", "Hostname": "127.0.0.1", "Port": port_of(sim), "Headers": {"X-Name": "€"}}
        assert (await probing_admin.put("/v1.0/backends", json=body)).status_code == 201

        async def decided() -> dict | None:
            health = (await probing_admin.get("/v1.0/backends/b/health")).json()
            return health if health["HealthChecked"] else None

        await eventually(decided, what="the first probe")
        health = await decided()
        assert health is not None and health["Healthy"] is False
        assert "cannot be sent" in health["LastError"]


async def test_a_backend_written_by_another_replica_is_probed_on_the_next_round(monitoring: Settings) -> None:
    settings = dataclasses.replace(monitoring, publish_interval=0.5)
    with running_controlplane(settings) as plane:
        async with (
            running_sim() as sim,
            httpx.AsyncClient(base_url=plane.url, headers={"Authorization": f"Bearer {TOKEN}"}) as admin,
        ):
            # Another replica's write: straight into the shared database, with no call to this one.
            libpq = (
                make_url(settings.database_url)
                .set(drivername="postgresql")
                .render_as_string(hide_password=False)
            )
            with psycopg.connect(libpq, autocommit=True) as conn:
                conn.execute(
                    "INSERT INTO backends (identifier, hostname, port, created_utc, last_update_utc) "
                    "VALUES ('elsewhere', '127.0.0.1', %s, now(), now())",
                    (port_of(sim),),
                )

            async def probed() -> bool:
                resp = await admin.get("/v1.0/backends/elsewhere/health")
                return resp.status_code == 200 and resp.json()["Healthy"] is True

            await eventually(probed, what="the other replica's backend to be probed")
