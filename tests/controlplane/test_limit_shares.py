"""Backends' limits split among the live data planes: the registry's demand, and the whole path from
reports on real NATS to shares in the published snapshot."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable

import httpx

from controlplane.reports import DataPlaneRegistry
from controlplane.settings import Settings
from shared.bus import Bus, BusNames
from shared.snapshot import Snapshot
from shared.wire.reports import DataPlaneReport, encode_report
from tests.controlplane.conftest import TOKEN
from tests.controlplane.harness import FakeClock, running_controlplane, watch_snapshots


def test_registry_demand_is_in_flight_plus_queued_of_live_planes() -> None:
    time = FakeClock()
    changes: list[dict[str, dict[str, int]]] = []
    registry = DataPlaneRegistry(
        ttl=10, clock=time.clock(), on_demand_change=lambda: changes.append(registry.demand())
    )
    registry.record(DataPlaneReport(id="dp1", in_flight={"b1": 2, "b2": 0}, queued={"b1": 3, "b3": 1}))
    assert registry.demand() == {"dp1": {"b1": 5, "b3": 1}}
    assert changes == []  # a new plane is a change of the live set, not of demand

    registry.record(DataPlaneReport(id="dp1", in_flight={"b1": 6}, queued={"b3": 1}))  # 5 -> 6: same level
    assert changes == []
    registry.record(DataPlaneReport(id="dp1", in_flight={"b1": 7}, queued={"b3": 1}))  # 6 -> 8: new level
    assert changes == [{"dp1": {"b1": 7, "b3": 1}}]
    registry.record(DataPlaneReport(id="dp1"))  # idle
    assert changes[-1] == {"dp1": {}}

    time.advance(5)
    registry.record(DataPlaneReport(id="dp2", queued={"b1": 1}))
    time.advance(6)  # dp1 silent for 11 s: no longer live, so no demand
    assert registry.demand() == {"dp2": {"b1": 1}}


@contextlib.asynccontextmanager
async def _reporting(bus: Bus, reports: dict[str, DataPlaneReport]) -> AsyncIterator[None]:
    """Publish each report in ``reports`` every 0.1 s (a data plane reports about once a second; the
    test's TTL is short), until the block ends. Change or remove entries to change what is reported."""

    async def loop() -> None:
        while True:
            for report in list(reports.values()):
                await bus.publish_report(encode_report(report))
            await asyncio.sleep(0.1)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _slots(backend: str) -> Callable[[Snapshot], dict[str, int]]:
    def read(snapshot: Snapshot) -> dict[str, int]:
        return {
            d.id: d.shares[backend].max_parallel
            for d in snapshot.content.cluster.dataplanes
            if backend in d.shares
        }

    return read


async def test_shares_follow_the_live_planes_and_their_demand(settings: Settings) -> None:
    short_ttl = dataclasses.replace(settings, dataplane_ttl=1.0)
    slots = _slots("b1")
    bus = Bus(settings.nats_url, BusNames(settings.bus_namespace), client_name="test-dataplanes")
    await bus.connect()
    reports: dict[str, DataPlaneReport] = {}
    try:
        with running_controlplane(short_ttl) as running:
            async with (
                httpx.AsyncClient(
                    base_url=running.url, headers={"Authorization": f"Bearer {TOKEN}"}
                ) as admin,
                watch_snapshots(settings.nats_url, settings.bus_namespace) as watch,
                _reporting(bus, reports),
            ):
                resp = await admin.put(
                    "/v1.0/backends",
                    json={"Identifier": "b1", "MaxParallelRequests": 12, "RateLimitRequestsThreshold": 6},
                )
                assert resp.status_code == 201, resp.text

                reports["dp-a"] = DataPlaneReport(id="dp-a")
                alone = await watch.next(lambda s: slots(s) == {"dp-a": 12}, within=20)
                (plane,) = alone.content.cluster.dataplanes
                assert plane.shares["b1"].rate_per_second == 6.0

                # A second plane appears: an even split at once.
                reports["dp-b"] = DataPlaneReport(id="dp-b")
                even = await watch.next(lambda s: slots(s) == {"dp-a": 6, "dp-b": 6}, after=alone.revision)

                # dp-b gets busy: the split follows its demand; every plane keeps a slot.
                reports["dp-b"] = DataPlaneReport(id="dp-b", in_flight={"b1": 6}, queued={"b1": 50})
                busy = await watch.next(lambda s: slots(s) == {"dp-a": 1, "dp-b": 11}, after=even.revision)
                assert sum(d.shares["b1"].rate_per_second for d in busy.content.cluster.dataplanes) <= 6.0

                # dp-b falls silent: dp-a gets the whole limit again.
                del reports["dp-b"]
                await watch.next(lambda s: slots(s) == {"dp-a": 12}, after=busy.revision, within=20)
    finally:
        await bus.close()


async def test_a_draining_plane_hands_its_shares_over_at_once_and_leaves_when_stopped(
    settings: Settings,
) -> None:
    # A long TTL: only the reports themselves can move the shares within the test's deadlines.
    long_ttl = dataclasses.replace(settings, dataplane_ttl=60.0)
    slots = _slots("b1")
    bus = Bus(settings.nats_url, BusNames(settings.bus_namespace), client_name="test-dataplanes")
    await bus.connect()
    reports: dict[str, DataPlaneReport] = {}
    try:
        with running_controlplane(long_ttl) as running:
            async with (
                httpx.AsyncClient(
                    base_url=running.url, headers={"Authorization": f"Bearer {TOKEN}"}
                ) as admin,
                watch_snapshots(settings.nats_url, settings.bus_namespace) as watch,
                _reporting(bus, reports),
            ):
                resp = await admin.put(
                    "/v1.0/backends",
                    json={"Identifier": "b1", "MaxParallelRequests": 12, "RateLimitRequestsThreshold": 6},
                )
                assert resp.status_code == 201, resp.text
                reports["dp-a"] = DataPlaneReport(id="dp-a")
                reports["dp-b"] = DataPlaneReport(id="dp-b")
                even = await watch.next(lambda s: slots(s) == {"dp-a": 6, "dp-b": 6}, within=20)

                # dp-b got SIGTERM with two requests running: it keeps those two, dp-a gets the rest.
                reports["dp-b"] = DataPlaneReport(id="dp-b", in_flight={"b1": 2}, draining=True)
                drained = await watch.next(lambda s: slots(s) == {"dp-a": 10, "dp-b": 2}, after=even.revision)
                rates = {d.id: d.shares["b1"].rate_per_second for d in drained.content.cluster.dataplanes}
                assert rates == {"dp-a": 5.0, "dp-b": 1.0}
                listed = {p["Id"]: p for p in (await admin.get("/v1.0/dataplanes")).json()}
                assert listed["dp-b"]["Draining"] is True and listed["dp-b"]["Live"] is True
                assert listed["dp-a"]["Draining"] is False

                # Its requests finish: nothing left for it.
                reports["dp-b"] = DataPlaneReport(id="dp-b", draining=True)
                idle = await watch.next(lambda s: slots(s) == {"dp-a": 12, "dp-b": 0}, after=drained.revision)

                # Its last report: out of the snapshot at once, not after the 60 s TTL.
                reports["dp-b"] = DataPlaneReport(id="dp-b", draining=True, stopped=True)
                await watch.next(lambda s: slots(s) == {"dp-a": 12}, after=idle.revision)
                listed = {p["Id"]: p for p in (await admin.get("/v1.0/dataplanes")).json()}
                assert listed["dp-b"]["Stopped"] is True and listed["dp-b"]["Live"] is False
    finally:
        await bus.close()
