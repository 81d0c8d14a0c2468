"""API key usage: data-plane reports in, counters in the admin API; never lost, never counted twice
(the same report heard again, by two replicas, or a data plane restarting under a new start id)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import text

from controlplane.admin.apikey_service import ApiKeyService
from controlplane.admin.schemas import ApiKeyIn
from controlplane.apikey_usage import KeyUsageRecorder
from controlplane.db import Database
from controlplane.settings import Settings
from shared.bus import Bus, BusNames
from shared.wire.reports import DataPlaneReport, KeyUsage, encode_report
from tests.controlplane.conftest import TOKEN
from tests.controlplane.harness import FakeClock, eventually, running_controlplane


def _report(plane: str, start: str, **usage: tuple[int, int]) -> DataPlaneReport:
    return DataPlaneReport(
        id=plane,
        start_id=start,
        key_usage={key: KeyUsage(requests=req, rate_limited=lim) for key, (req, lim) in usage.items()},
    )


async def test_reports_become_the_keys_counters_in_the_admin_api(settings: Settings, nats_url: str) -> None:
    with running_controlplane(settings) as plane:
        async with (
            httpx.AsyncClient(base_url=plane.url, headers={"Authorization": f"Bearer {TOKEN}"}) as admin,
        ):
            assert (await admin.put("/v1.0/apikeys", json={"Identifier": "k1"})).status_code == 201
            bus = Bus(nats_url, BusNames(settings.bus_namespace), client_name="usage-test")
            await bus.connect()
            try:
                reports = [
                    _report("dp-a", "run1", k1=(3, 1), ghost=(9, 9)),  # a key that does not exist
                    _report("dp-a", "run1", k1=(3, 1)),  # heard again: nothing new
                    _report("dp-a", "run1", k1=(5, 1)),
                    _report("dp-b", "only", k1=(1, 0)),
                    _report("dp-a", "run2", k1=(2, 2)),  # dp-a restarted: its counters start over
                ]
                for report in reports:
                    await bus.publish_report(encode_report(report))
                    # One report at a time: the registry keeps only the last of each data plane.
                    await eventually(
                        lambda r=report: any(s.report == r for s in plane.plane.registry.sightings()),
                        what="the report heard",
                    )
            finally:
                await bus.close()

            async def counted() -> bool:
                key = (await admin.get("/v1.0/apikeys/k1")).json()
                return (key["RequestsTotal"], key["RateLimitedTotal"]) == (5 + 1 + 2, 1 + 2)

            await eventually(counted, within=15, what="the counters in the admin API")
            key = (await admin.get("/v1.0/apikeys/k1")).json()
            assert key["LastUsedUtc"] is not None and key["LastUsedUtc"] >= key["CreatedUtc"]
            listed = (await admin.get("/v1.0/apikeys")).json()
            assert listed[0]["RequestsTotal"] == 8


@pytest.fixture
async def database(clean_database_url: str) -> AsyncIterator[Database]:
    db = Database(clean_database_url)
    yield db
    await db.close()


async def test_two_replicas_and_folding_never_count_a_run_twice(database: Database) -> None:
    clock = FakeClock()
    keys = ApiKeyService(database, clock=clock.clock(), on_change=lambda: None)
    await keys.create(ApiKeyIn(identifier="k1"))
    replicas = [KeyUsageRecorder(database, clock=clock.clock(), fold_after=3600) for _ in range(2)]
    source = "dp-" + uuid.uuid4().hex[:6]
    for counters in ((4, 0), (7, 1)):
        for replica in replicas:  # every replica hears every report
            replica.record(_report(source, "run1", k1=counters))
            await replica.flush()
        clock.advance(1)
    used = await keys.get("k1")
    assert (used.requests_total, used.rate_limited_total) == (7, 1)
    assert used.last_used_utc is not None

    # Long silent and not live: folded into the key's own totals, once, even by both replicas.
    clock.advance(7200)
    for replica in replicas:
        await replica.fold()
    folded = await keys.get("k1")
    assert (folded.requests_total, folded.rate_limited_total) == (7, 1)
    assert folded.last_used_utc == used.last_used_utc
    async with database.session() as session:
        assert (await session.exec(text("SELECT count(*) FROM apikey_usage"))).one()[0] == 0  # type: ignore[call-overload]

    # A live run is never folded, however long its counters stood still.
    replicas[0].record(_report(source, "run2", k1=(1, 0)))
    await replicas[0].flush()
    clock.advance(7200)
    live = KeyUsageRecorder(database, clock=clock.clock(), live_sources=lambda: {f"{source}/run2"})
    await live.fold()
    replicas[0].record(_report(source, "run2", k1=(2, 0)))
    await replicas[0].flush()
    assert (await keys.get("k1")).requests_total == 7 + 2
