"""Data-plane reports: the registry (with a hand-moved clock) and the whole path over real NATS."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from controlplane.reports import DataPlaneRegistry
from controlplane.settings import Settings
from shared.bus import Bus, BusNames
from shared.wire.reports import DataPlaneReport, encode_report
from tests.controlplane.conftest import TOKEN
from tests.controlplane.harness import FakeClock, eventually, running_controlplane, watch_snapshots


def test_registry_tracks_liveness_by_the_clock() -> None:
    time = FakeClock()
    changes: list[frozenset[str]] = []
    registry = DataPlaneRegistry(
        ttl=10,
        clock=time.clock(),
        forget_after=60,
        on_live_change=lambda: changes.append(registry.live_ids()),
    )

    registry.record(DataPlaneReport(id="dp1", applied_revision=3))
    assert changes == [frozenset({"dp1"})]
    time.advance(6)
    registry.record(DataPlaneReport(id="dp2"))
    registry.record(DataPlaneReport(id="dp1", applied_revision=4))  # already live: no change
    assert changes == [frozenset({"dp1"}), frozenset({"dp1", "dp2"})]
    assert registry.sightings()[0].report.applied_revision == 4

    time.advance(10.5)  # dp1 and dp2 were last seen 10.5 s ago: past the TTL
    assert registry.check() is True
    assert changes[-1] == frozenset()
    assert registry.check() is False  # no change, no second notification
    assert [(s.report.id, registry.is_live(s)) for s in registry.sightings()] == [
        ("dp1", False),
        ("dp2", False),
    ]

    registry.record(DataPlaneReport(id="dp2"))  # back again
    assert changes[-1] == frozenset({"dp2"})
    time.advance(55)
    registry.check()
    assert [s.report.id for s in registry.sightings()] == ["dp2"]  # dp1 forgotten after 60 s of silence


def test_registry_hands_a_draining_plane_back_request_by_request_and_drops_it_when_stopped() -> None:
    time = FakeClock()
    live: list[frozenset[str]] = []
    demand: list[dict[str, dict[str, int]]] = []
    registry = DataPlaneRegistry(
        ttl=10,
        clock=time.clock(),
        on_live_change=lambda: live.append(registry.live_ids()),
        on_demand_change=lambda: demand.append(registry.demand()),
    )
    registry.record(DataPlaneReport(id="dp1"))
    registry.record(DataPlaneReport(id="dp2", in_flight={"b": 7}))
    assert registry.draining_ids() == frozenset()

    registry.record(DataPlaneReport(id="dp2", in_flight={"b": 7}, draining=True))  # SIGTERM
    assert registry.draining_ids() == {"dp2"}
    assert len(demand) == 1  # the split must change now, though its demand did not
    registry.record(DataPlaneReport(id="dp2", in_flight={"b": 6}, draining=True))  # 7 -> 6: same level...
    assert len(demand) == 2  # ...but a draining plane's every finished request counts
    registry.record(DataPlaneReport(id="dp2", in_flight={"b": 6}, draining=True))
    assert len(demand) == 2

    registry.record(DataPlaneReport(id="dp2", draining=True, stopped=True))  # its last report
    assert live[-1] == {"dp1"}  # gone at once, not after the TTL
    assert registry.draining_ids() == frozenset()
    assert [registry.is_live(s) for s in registry.sightings()] == [True, False]  # dp1, dp2

    registry.record(DataPlaneReport(id="dp2"))  # started again under the same id
    assert live[-1] == {"dp1", "dp2"}


async def test_registry_ignores_unreadable_reports() -> None:
    registry = DataPlaneRegistry(ttl=10, clock=FakeClock().clock())
    for junk in (b"not json", b'{"applied_revision": 1}', b'{"id": ""}', b'{"id": 5}', b"[]"):
        await registry.handle(junk)
    assert registry.sightings() == []
    await registry.handle(encode_report(DataPlaneReport(id="dp1")))
    assert registry.live_ids() == {"dp1"}


@pytest.fixture
async def reporter(settings: Settings) -> AsyncIterator[Bus]:
    bus = Bus(settings.nats_url, BusNames(settings.bus_namespace), client_name="test-dataplane")
    await bus.connect()
    yield bus
    await bus.close()


async def test_reports_show_data_planes_until_they_fall_silent(settings: Settings, reporter: Bus) -> None:
    short_ttl = Settings(
        database_url=settings.database_url,
        admin_tokens=settings.admin_tokens,
        nats_url=settings.nats_url,
        bus_namespace=settings.bus_namespace,
        dataplane_ttl=0.5,
    )
    with running_controlplane(short_ttl) as running:
        async with (
            httpx.AsyncClient(base_url=running.url, headers={"Authorization": f"Bearer {TOKEN}"}) as admin,
            watch_snapshots(settings.nats_url, settings.bus_namespace) as watch,
        ):
            report = DataPlaneReport(
                id="dp-a",
                applied_revision=7,
                snapshot_error="snapshot revision 8 fails its content hash",
                address="http://10.0.0.9:43411",
                version="0.1.0",
                in_flight={"b1": 2},
                queued={"b1": 5},
                rejected_total=3,
                ejected={"b2": "connection refused"},
                requests_total=99,
                client_errors={"header_timeout": 4, "body_too_large": 1},
                started_at="2030-01-01T00:00:00Z",
            )
            await reporter.publish_report(encode_report(report))

            async def listed() -> list[dict[str, object]]:
                return (await admin.get("/v1.0/dataplanes")).json()

            await eventually(lambda: _has_live(listed, "dp-a"), what="dp-a listed as live")
            (plane,) = await listed()
            assert plane["AppliedRevision"] == 7
            assert plane["SnapshotError"] == report.snapshot_error
            assert plane["Address"] == "http://10.0.0.9:43411"
            assert plane["InFlight"] == {"b1": 2} and plane["RequestsTotal"] == 99
            assert plane["Queued"] == {"b1": 5} and plane["RejectedTotal"] == 3
            assert plane["Ejected"] == {"b2": "connection refused"}
            assert plane["ClientErrors"] == {"header_timeout": 4, "body_too_large": 1}
            assert plane["LastSeenUtc"].endswith("Z")
            assert plane["Draining"] is False and plane["Stopped"] is False

            joined = await watch.next(lambda s: [d.id for d in s.content.cluster.dataplanes] == ["dp-a"])

            # Silence: after the TTL it is no longer live and leaves the snapshot's cluster view.
            left = await watch.next(lambda s: s.content.cluster.dataplanes == (), after=joined.revision)
            assert left.revision > joined.revision
            (plane,) = await listed()
            assert plane["Live"] is False


async def _has_live(listed, identifier: str) -> bool:
    return any(p["Id"] == identifier and p["Live"] for p in await listed())
