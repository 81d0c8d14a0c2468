"""10,000 backends and 1,000 frontends: the real control plane publishes the snapshot in pieces and two
real data planes apply it, follow a later admin write, and cache it whole."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from controlplane.db import Database
from controlplane.migrate import upgrade
from controlplane.settings import Settings
from controlplane.tables import BackendRow, FrontendRow
from dataplane.routing.table import RequestKind
from dataplane.settings import DataPlaneSettings
from shared.bus import Bus
from shared.pieces import decode_manifest, is_manifest
from shared.snapshot import Snapshot, decode
from tests.controlplane.harness import running_controlplane
from tests.dataplane.harness import RunningDataPlane, running_dataplane
from tests.support.services import fresh_database
from tests.support.signing import SnapshotKeys

pytestmark = pytest.mark.slow

BACKENDS, FRONTENDS, PER_FRONTEND = 10_000, 1_000, 10
TOKEN = "big-snapshot-admin-token"


async def _configure(url: str) -> None:
    now = datetime.now(UTC)
    db = Database(url)
    try:
        async with db.session() as session:
            for i in range(BACKENDS):
                session.add(
                    BackendRow(
                        identifier=f"b{i:05d}",
                        name=f"backend {i}",
                        hostname=f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",
                        port=11434,
                        labels=["gpu"],
                        # Limited, so that every data plane gets a share of each (unlimited ones get none).
                        max_parallel_requests=4,
                        rate_limit_requests_threshold=10,
                        created_utc=now,
                        last_update_utc=now,
                    )
                )
            for f in range(FRONTENDS):
                session.add(
                    FrontendRow(
                        identifier=f"f{f:04d}",
                        hostname=f"f{f:04d}.test",
                        backends=[f"b{(f * PER_FRONTEND + k) % BACKENDS:05d}" for k in range(PER_FRONTEND)],
                        required_models=["llama3.2"],
                        created_utc=now,
                        last_update_utc=now,
                    )
                )
            await session.commit()
    finally:
        await db.close()


async def _until(predicate, within: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within}s")
        await asyncio.sleep(0.1)


def _complete(snapshot: Snapshot | None, dataplanes: set[str]) -> bool:
    return (
        snapshot is not None
        and len(snapshot.content.backends) == BACKENDS
        and len(snapshot.content.frontends) == FRONTENDS
        and {d.id for d in snapshot.content.cluster.dataplanes} == dataplanes
        and all(len(d.shares) == BACKENDS for d in snapshot.content.cluster.dataplanes)
    )


async def test_ten_thousand_backends_and_a_thousand_frontends_publish_and_apply(
    database_url: str, nats_url: str, bus_namespace: str, tmp_path: Path, snapshot_keys: SnapshotKeys
) -> None:
    with fresh_database(database_url) as url:
        upgrade(url)
        await _configure(url)
        settings = Settings(
            database_url=url,
            admin_tokens=(TOKEN,),
            nats_url=nats_url,
            bus_namespace=bus_namespace,
            monitor_backends=False,
            snapshot_signing_key_file=snapshot_keys.private,
        )
        dp_settings = DataPlaneSettings(
            nats_url=nats_url,
            bus_namespace=bus_namespace,
            report_interval=0.5,
            snapshot_poll_interval=1.0,
            snapshot_public_key_files=(snapshot_keys.public,),
        )
        with running_controlplane(settings) as cp:
            async with (
                running_dataplane(
                    dataclasses.replace(dp_settings, dataplane_id="dp-a", snapshot_cache=tmp_path / "a.json")
                ) as a,
                running_dataplane(dataclasses.replace(dp_settings, dataplane_id="dp-b")) as b,
            ):
                planes: list[RunningDataPlane] = [a, b]
                ids = {"dp-a", "dp-b"}
                await _until(
                    lambda: all(_complete(p.app.state.snapshot, ids) for p in planes), 120, "both applied"
                )
                bus = Bus(nats_url, cp.plane.bus.names)
                await bus.connect()
                try:
                    head = await bus.read_snapshot_head()
                    assert head is not None and is_manifest(head[0])
                    manifest = decode_manifest(head[0])
                    assert manifest.pieces > 1 and manifest.size > 1024 * 1024

                    # Routing works from it: the last frontend's pool holds its ten backends.
                    route = a.app.state.table.frontend_for("f0999.test")
                    assert len(route.pool(RequestKind.COMPLETIONS).targets) == PER_FRONTEND

                    # A later admin write reaches both, and is stored in pieces again.
                    async with httpx.AsyncClient(
                        base_url=cp.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
                    ) as admin:
                        resp = await admin.patch("/v1.0/backends/b09999", json={"Name": "renamed"})
                        assert resp.status_code == 200, resp.text

                    def renamed(plane: RunningDataPlane) -> bool:
                        snapshot = plane.app.state.snapshot
                        assert snapshot is not None
                        return snapshot.content.backends[-1].name == "renamed"

                    await _until(lambda: all(renamed(p) for p in planes), 60, "the rename applied")
                    # The delta reaches the data planes before the whole snapshot is stored,
                    # so the store may trail them briefly; it must catch up, in pieces.
                    revision = a.app.state.revision
                    deadline = time.monotonic() + 30
                    while True:
                        stored = await bus.read_snapshot()
                        assert stored is not None
                        if decode(stored[0]).revision >= revision:
                            break
                        assert time.monotonic() < deadline, "the store did not catch up with the delta"
                        await asyncio.sleep(0.1)
                    head = await bus.read_snapshot_head()
                    assert head is not None and is_manifest(head[0])
                finally:
                    await bus.close()
                # The disk cache holds the whole snapshot.
                await _until(lambda: (tmp_path / "a.json").exists(), 10, "cache written")
                await _until(
                    lambda: decode((tmp_path / "a.json").read_bytes()).revision == a.app.state.revision,
                    10,
                    "cache current",
                )
