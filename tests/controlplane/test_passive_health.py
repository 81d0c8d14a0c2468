"""Passive health folded into the control plane: data planes' ejections trigger immediate probes (at most
one per backend per gap) and show in the admin health view. Real simulators, Postgres and NATS; the
reports are published on the bus as a data plane publishes them."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import httpx
import pytest

from controlplane.reports import DataPlaneRegistry
from controlplane.settings import Settings
from ollamaflow.sim import running_sim
from shared.bus import Bus, BusNames
from shared.wire.reports import DataPlaneReport, encode_report
from tests.controlplane.conftest import TOKEN
from tests.controlplane.harness import FakeClock, eventually, running_controlplane
from tests.controlplane.monitoring_support import port_of, sim_stats


def test_registry_passes_on_only_newly_ejected_backends() -> None:
    time = FakeClock()
    ejected: list[str] = []
    registry = DataPlaneRegistry(ttl=10, clock=time.clock(), on_ejected=ejected.append)

    registry.record(DataPlaneReport(id="dp1", ejected={"b1": "connection refused"}))
    registry.record(DataPlaneReport(id="dp1", ejected={"b1": "connection refused"}))  # still: not new
    registry.record(DataPlaneReport(id="dp2", ejected={"b1": "HTTP 503 x5", "b2": "timed out"}))
    assert ejected == ["b1", "b1", "b2"]  # each data plane's own view: dp2 newly ejects b1 too
    assert registry.ejections() == {
        "b1": {"dp1": "connection refused", "dp2": "HTTP 503 x5"},
        "b2": {"dp2": "timed out"},
    }

    registry.record(DataPlaneReport(id="dp1"))  # the trial request succeeded: closed again
    registry.record(DataPlaneReport(id="dp1", ejected={"b1": "connection refused"}))  # and open again
    assert ejected[3:] == ["b1"]

    time.advance(11)  # both fall silent: their ejections no longer count
    assert registry.ejections() == {}
    registry.record(DataPlaneReport(id="dp2", ejected={"b2": "timed out"}))  # back after the TTL: new
    assert ejected[4:] == ["b2"]
    assert registry.ejections() == {"b2": {"dp2": "timed out"}}


@pytest.fixture
async def reporter(settings: Settings) -> AsyncIterator[Bus]:
    """A bus connection publishing reports as a data plane does."""
    bus = Bus(settings.nats_url, BusNames(settings.bus_namespace), client_name="test-dataplane")
    await bus.connect()
    yield bus
    await bus.close()


def _slow_probes(monitoring: Settings, **changes: object) -> Settings:
    """Probes a minute apart, so only a report can explain a probe in between."""
    return dataclasses.replace(monitoring, health_interval=60.0, inventory_interval=60.0, **changes)


async def _add_backend(admin: httpx.AsyncClient, ident: str, port: int) -> None:
    resp = await admin.put(
        "/v1.0/backends", json={"Identifier": ident, "Hostname": "127.0.0.1", "Port": port}
    )
    assert resp.status_code == 201, resp.text


async def _health(admin: httpx.AsyncClient, ident: str) -> dict:
    resp = await admin.get(f"/v1.0/backends/{ident}/health")
    assert resp.status_code == 200, resp.text
    return resp.json()


async def _probes(sim: str) -> int:
    return (await sim_stats(sim))["by_path"].get("/", 0)


async def test_an_ejection_report_probes_the_backend_at_once_but_not_more_than_once_per_gap(
    monitoring: Settings, reporter: Bus
) -> None:
    settings = _slow_probes(monitoring, ejected_probe_gap=30.0, dataplane_ttl=3.0)
    with running_controlplane(settings) as running:
        async with (
            running_sim() as sim,
            httpx.AsyncClient(base_url=running.url, headers={"Authorization": f"Bearer {TOKEN}"}) as admin,
        ):
            await _add_backend(admin, "b1", port_of(sim))
            await eventually(lambda: _probes(sim), what="the first probe")
            await eventually(lambda: _healthy(admin, "b1"), what="b1 healthy")
            assert await _probes(sim) == 1
            assert (await _health(admin, "b1"))["EjectedBy"] == {}

            await reporter.publish_report(
                encode_report(DataPlaneReport(id="dp-a", ejected={"b1": "HTTP 502"}))
            )
            await eventually(lambda: _probe_count_is(sim, 2), what="a probe right after the report")

            # More reports within the gap: re-ejections, and another data plane ejecting it too.
            for _ in range(5):
                await reporter.publish_report(encode_report(DataPlaneReport(id="dp-a")))
                await reporter.publish_report(
                    encode_report(DataPlaneReport(id="dp-a", ejected={"b1": "HTTP 502"}))
                )
            await reporter.publish_report(
                encode_report(DataPlaneReport(id="dp-b", ejected={"b1": "connection reset"}))
            )
            await eventually(
                lambda: _ejected_by(admin, "b1", {"dp-a": "HTTP 502", "dp-b": "connection reset"}),
                what="both data planes listed in EjectedBy",
            )
            assert await _probes(sim) == 2  # a healthy answer: no follow-up, and no second wake-up
            listed = {b["Identifier"]: b for b in (await admin.get("/v1.0/backends/health")).json()}
            assert listed["b1"]["EjectedBy"] == {"dp-a": "HTTP 502", "dp-b": "connection reset"}
            assert (
                listed["b1"]["Healthy"] is True
            )  # the probe answered: passive ejection alone decides nothing

            # dp-a closes its breaker: only dp-b is listed; then dp-b goes stale after the 3 s TTL.
            await reporter.publish_report(encode_report(DataPlaneReport(id="dp-a")))
            await reporter.publish_report(
                encode_report(DataPlaneReport(id="dp-b", ejected={"b1": "connection reset"}))
            )
            await eventually(
                lambda: _ejected_by(admin, "b1", {"dp-b": "connection reset"}), what="dp-a no longer listed"
            )
            await eventually(lambda: _ejected_by(admin, "b1", {}), what="EjectedBy cleared")
            assert await _probes(sim) == 2
            models = (await admin.get("/v1.0/models")).json()
            assert all("EjectedBy" not in m for m in models)


async def test_a_backend_a_data_plane_ejects_is_confirmed_unhealthy_long_before_the_interval(
    monitoring: Settings, reporter: Bus
) -> None:
    settings = _slow_probes(monitoring, ejected_probe_gap=0.3)
    with running_controlplane(settings) as running:
        async with httpx.AsyncClient(
            base_url=running.url, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as admin:
            async with running_sim() as sim:
                await _add_backend(admin, "b1", port_of(sim))
                await eventually(lambda: _healthy(admin, "b1"), what="b1 healthy")
            # The simulator is gone; the next scheduled probe is a minute away.
            report = DataPlaneReport(id="dp-a", ejected={"b1": "cannot connect"})
            await reporter.publish_report(encode_report(report))
            await eventually(lambda: _unhealthy(admin, "b1"), within=20, what="b1 unhealthy")
            health = await _health(admin, "b1")
            assert health["ConsecutiveFailures"] == 2  # the default unhealthy threshold, probed twice
            assert "connect" in health["LastError"]
            assert health["EjectedBy"] == {"dp-a": "cannot connect"}


async def _healthy(admin: httpx.AsyncClient, ident: str) -> bool:
    return (await _health(admin, ident))["Healthy"] is True


async def _unhealthy(admin: httpx.AsyncClient, ident: str) -> bool:
    health = await _health(admin, ident)
    return health["HealthChecked"] is True and health["Healthy"] is False


async def _probe_count_is(sim: str, count: int) -> bool:
    return await _probes(sim) == count


async def _ejected_by(admin: httpx.AsyncClient, ident: str, expected: dict[str, str]) -> bool:
    return (await _health(admin, ident))["EjectedBy"] == expected
