"""The control plane's Prometheus metrics after real probes, publishes, reports and admin requests,
read with prometheus_client's own parser."""

from __future__ import annotations

import contextlib
import dataclasses

import httpx
from prometheus_client.parser import text_string_to_metric_families

from controlplane.settings import Settings
from ollamaflow.sim import running_sim
from shared.bus import Bus, BusNames
from shared.wire.reports import DataPlaneReport, encode_report
from tests.controlplane.conftest import TOKEN
from tests.controlplane.harness import eventually, running_controlplane
from tests.controlplane.monitoring_support import port_of
from tests.support.processes import free_port

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


async def _scrape(url: str, token: str = "") -> Samples:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient() as client:
        response = await client.get(url + "/metrics", headers=headers)
    assert response.status_code == 200, response.text
    return _parse(response.text)


async def test_probes_health_models_publishes_dataplanes_and_admin_requests(monitoring: Settings) -> None:
    async with running_sim(models=("llama3.2:latest", "qwen2.5:0.5b")) as sim:
        with running_controlplane(monitoring) as running:
            async with httpx.AsyncClient(
                base_url=running.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
            ) as admin:
                for ident, port in (("up", port_of(sim)), ("down", free_port())):
                    body = {"Identifier": ident, "Hostname": "127.0.0.1", "Port": port}
                    assert (await admin.put("/v1.0/backends", json=body)).status_code == 201
                assert (await admin.get("/v1.0/backends/nope")).status_code == 404
                bus = Bus(monitoring.nats_url, BusNames(monitoring.bus_namespace), client_name="t")
                await bus.connect()
                try:
                    report = DataPlaneReport(id="dp-1", requests_total=42, in_flight={"up": 3})
                    await bus.publish_report(encode_report(report))
                    await eventually(lambda: running.plane.registry.live_ids(), what="the report")
                finally:
                    await bus.close()

                async def settled() -> bool:
                    samples = await _scrape(running.url)
                    return (
                        value(samples, "ollamaflow_controlplane_backend_models", backend="up") == 2
                        and value(samples, "ollamaflow_controlplane_probes_total", backend="down") >= 1
                        and value(
                            samples, "ollamaflow_controlplane_snapshot_publishes_total", result="stored"
                        )
                        >= 1
                    )

                await eventually(settled, what="probes, inventory and a publish")
                samples = await _scrape(running.url)
    assert value(samples, "ollamaflow_controlplane_backend_healthy", backend="up") == 1
    assert value(samples, "ollamaflow_controlplane_backend_healthy", backend="down") == 0
    assert value(samples, "ollamaflow_controlplane_probes_total", backend="up", result="ok") >= 1
    assert value(samples, "ollamaflow_controlplane_probes_total", backend="down", result="ok") == 0
    assert value(samples, "ollamaflow_controlplane_probe_duration_seconds_count", backend="up") >= 1
    assert value(samples, "ollamaflow_controlplane_health_transitions_total", backend="up", to="healthy") == 1
    assert (
        value(samples, "ollamaflow_controlplane_health_transitions_total", backend="down", to="unhealthy")
        == 1
    )
    assert value(samples, "ollamaflow_controlplane_snapshot_bytes") > 0
    stored = value(samples, "ollamaflow_controlplane_snapshot_publishes_total", result="stored")
    timed = value(samples, "ollamaflow_controlplane_snapshot_publish_duration_seconds_count", result="stored")
    assert timed == stored >= 1
    assert value(samples, "ollamaflow_controlplane_snapshot_revision") >= 1
    assert value(samples, "ollamaflow_controlplane_dataplanes_live") == 1
    assert value(samples, "ollamaflow_controlplane_dataplane_requests_total", dataplane="dp-1") == 42
    assert value(samples, "ollamaflow_controlplane_dataplane_in_flight", dataplane="dp-1") == 3
    # Admin requests by route template, never the raw path.
    created = {"method": "PUT", "route": "/v1.0/backends", "status": "201"}
    assert value(samples, "ollamaflow_controlplane_http_requests_total", **created) == 2
    missing = {"method": "GET", "route": "/v1.0/backends/{identifier}", "status": "404"}
    assert value(samples, "ollamaflow_controlplane_http_requests_total", **missing) == 1
    assert not any("nope" in dict(labels).get("route", "") for _, labels in samples)


async def test_a_token_and_a_port_of_their_own(settings: Settings) -> None:
    port = free_port()
    changed = dataclasses.replace(settings, metrics_port=port, metrics_token="scrape-secret")
    with running_controlplane(changed) as running:
        async with httpx.AsyncClient() as client:
            on_api_port = await client.get(running.url + "/metrics")
            refused = await client.get(f"http://127.0.0.1:{port}/metrics")
        samples = await _scrape(f"http://127.0.0.1:{port}", token="scrape-secret")
    assert on_api_port.status_code == 404 and refused.status_code == 401
    assert value(samples, "ollamaflow_controlplane_dataplanes_live") == 0


async def test_the_token_guards_the_route_on_the_api_port(settings: Settings) -> None:
    with running_controlplane(dataclasses.replace(settings, metrics_token="scrape-secret")) as running:
        async with httpx.AsyncClient() as client:
            refused = await client.get(running.url + "/metrics")
            admin_token = await client.get(
                running.url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
            )
        samples = await _scrape(running.url, token="scrape-secret")
    assert refused.status_code == 401 and admin_token.status_code == 401
    assert value(samples, "ollamaflow_controlplane_snapshot_publishes_total", result="failed") == 0


def _replica(settings: Settings, name: str) -> Settings:
    # A long lease: leadership moves only when the test stops the leader (a clean, immediate handover).
    return dataclasses.replace(settings, replica_id=name, lease_ttl=10.0, lease_renew=1.0)


async def test_the_leader_s_figures_follow_the_lease(monitoring: Settings) -> None:
    """Only the leader probes and publishes: a follower exports no backend or publish-round figures
    but the leader's revision; once it takes over, its new term's probes are counted."""
    async with running_sim() as sim:
        with contextlib.ExitStack() as leader_running:
            first = leader_running.enter_context(running_controlplane(_replica(monitoring, "a")))
            await eventually(lambda: first.plane.lease.is_leader, what="a leading")
            async with httpx.AsyncClient(
                base_url=first.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
            ) as admin:
                body = {"Identifier": "up", "Hostname": "127.0.0.1", "Port": port_of(sim)}
                assert (await admin.put("/v1.0/backends", json=body)).status_code == 201
            with running_controlplane(_replica(monitoring, "b")) as second:

                async def leader_probed_and_published() -> bool:
                    samples = await _scrape(first.url)
                    return (
                        value(samples, "ollamaflow_controlplane_probes_total", backend="up") >= 1
                        and value(samples, "ollamaflow_controlplane_snapshot_revision") >= 1
                    )

                await eventually(leader_probed_and_published, what="a probing and publishing")
                revision = value(await _scrape(first.url), "ollamaflow_controlplane_snapshot_revision")

                async def follower_knows_the_revision() -> bool:
                    samples = await _scrape(second.url)
                    return value(samples, "ollamaflow_controlplane_snapshot_revision") >= revision

                await eventually(follower_knows_the_revision, what="b reading the leader's revision")
                leading, following = await _scrape(first.url), await _scrape(second.url)
                assert value(leading, "ollamaflow_controlplane_leader") == 1
                assert value(following, "ollamaflow_controlplane_leader") == 0
                assert value(following, "ollamaflow_controlplane_snapshot_publish_failing") == 0
                for name in (
                    "ollamaflow_controlplane_probes_total",
                    "ollamaflow_controlplane_backend_healthy",
                    "ollamaflow_controlplane_snapshot_publishes_total",
                    "ollamaflow_controlplane_snapshot_bytes",
                    "ollamaflow_controlplane_pulls",
                ):
                    assert not any(n == name for n, _ in following), name
                leader_running.close()  # "a" stops cleanly: "b" takes the lease at once
                await eventually(lambda: second.plane.lease.is_leader, within=5, what="b leading")

                async def new_leader_probed() -> bool:
                    samples = await _scrape(second.url)
                    return (
                        value(samples, "ollamaflow_controlplane_probes_total", backend="up", result="ok") >= 1
                        and value(samples, "ollamaflow_controlplane_backend_healthy", backend="up") == 1
                    )

                await eventually(new_leader_probed, what="b's own probes counted")
                taken_over = await _scrape(second.url)
    assert value(taken_over, "ollamaflow_controlplane_leader") == 1
    assert value(taken_over, "ollamaflow_controlplane_probe_duration_seconds_count", backend="up") >= 1
