"""The data plane follows the snapshot on real NATS: live changes, rejections, reports, the disk cache,
and a NATS restart."""

from __future__ import annotations

import dataclasses
import os
import socket
import stat
from pathlib import Path

import httpx
import msgspec
import pytest

from dataplane.settings import DataPlaneSettings
from dataplane.state import SnapshotState
from ollamaflow.embedded import EmbeddedNats
from shared.bus import Bus, BusNames
from shared.signing import sign
from shared.snapshot import Snapshot, encode, seal
from tests.dataplane.harness import (
    RunningDataPlane,
    SnapshotWriter,
    content,
    eventually,
    running_dataplane,
    snapshot_bytes,
)
from tests.support.signing import fixed_trust, other_signer, sign_for_tests

GENERATE = {"model": "llama3.2", "prompt": "x", "stream": False}


async def _served_by(dp: RunningDataPlane, n: int) -> list[str]:
    async with httpx.AsyncClient() as client:
        served = []
        for _ in range(n):
            resp = await client.post(dp.url + "/api/generate", json=GENERATE)
            assert resp.status_code == 200, resp.text
            served.append(resp.headers["x-ollamaflow-backend"])
        return served


async def test_snapshot_changes_apply_live(
    backend_urls: list[str], dp_settings: DataPlaneSettings, writer: SnapshotWriter
) -> None:
    a, b, c = backend_urls
    async with running_dataplane(dp_settings) as dp:
        await writer.publish(content({"a": a, "b": b}), 1)
        await dp.wait_revision(1)
        assert set(await _served_by(dp, 4)) == {"a", "b"}

        await writer.publish(content({"b": b}), 2)  # remove a
        await dp.wait_revision(2)
        assert set(await _served_by(dp, 4)) == {"b"}

        await writer.publish(content({"b": b, "c": c}), 3)  # add c
        await dp.wait_revision(3)
        assert set(await _served_by(dp, 4)) == {"b", "c"}


def _tampered(data: bytes) -> bytes:
    raw = msgspec.json.decode(data)
    raw["content"]["backends"][0]["base_url"] = "http://127.0.0.1:9"
    return msgspec.json.encode(raw)


def _future_major(data: bytes) -> bytes:
    raw = msgspec.json.decode(data)
    raw["schema"] = 2
    return msgspec.json.encode(raw)


async def test_flawed_snapshots_are_rejected_and_reported_while_the_last_good_one_serves(
    backend_urls: list[str], dp_settings: DataPlaneSettings, writer: SnapshotWriter, bus: Bus
) -> None:
    a, b, _ = backend_urls
    async with running_dataplane(dp_settings, listen_reports=bus) as dp:
        await writer.publish(content({"a": a}), 5)
        await dp.wait_revision(5)

        for data, reason in [
            (snapshot_bytes(content({"b": b}), 4), "older"),
            (_tampered(snapshot_bytes(content({"b": b}), 6)), "hash"),
            (_future_major(snapshot_bytes(content({"b": b}), 7)), "schema major 2"),
        ]:
            await writer.write(data)
            await eventually(lambda r=reason: r in dp.app.state.error, what=f"rejection ({reason})")
            await eventually(
                lambda r=reason: bool(dp.reports) and r in dp.reports[-1].snapshot_error, what="reported"
            )
            assert dp.reports[-1].applied_revision == 5
            assert await _served_by(dp, 2) == ["a", "a"]
        ready = (await dp.readyz()).json()
        assert ready["revision"] == 5 and "schema major 2" in ready["snapshot_error"]

        await writer.publish(content({"b": b}), 8)
        await dp.wait_revision(8)
        assert dp.app.state.error == ""
        assert await _served_by(dp, 2) == ["b", "b"]


async def test_forged_snapshots_in_the_bucket_are_refused_and_the_real_one_keeps_routing(
    backend_urls: list[str], dp_settings: DataPlaneSettings, writer: SnapshotWriter, bus: Bus
) -> None:
    """Anyone who can write the KV bucket (shared.snapshot.seal is public) still cannot route: an
    unsigned snapshot and one signed by a stranger's key are refused, said in the report and /readyz."""
    a, b, _ = backend_urls
    async with running_dataplane(dp_settings, listen_reports=bus) as dp:
        await writer.publish(content({"a": a}), 5)
        await dp.wait_revision(5)
        forged = seal(content({"b": b}), revision=50, generated_at="2025-01-01T00:00:00Z")
        for data, reason in [
            (encode(forged), "unsigned"),
            (encode(sign(forged, other_signer())), "not trusted"),
            (
                encode(msgspec.structs.replace(forged, signature=sign_for_tests(_sealed_a(a)).signature)),
                "forged",
            ),
        ]:
            await writer.write(data)
            await eventually(lambda r=reason: r in dp.app.state.error, what=f"rejection ({reason})")
            await eventually(
                lambda r=reason: bool(dp.reports) and r in dp.reports[-1].snapshot_error, what="reported"
            )
            assert dp.reports[-1].applied_revision == 5
            assert await _served_by(dp, 2) == ["a", "a"]
            ready = (await dp.readyz()).json()
            assert ready["revision"] == 5 and reason in ready["snapshot_error"]

        await writer.publish(content({"b": b}), 51)  # the real control plane's next one applies
        await dp.wait_revision(51)
        assert await _served_by(dp, 2) == ["b", "b"]


def _sealed_a(a: str) -> Snapshot:
    """A genuine revision 50 whose signature a forger copies onto other content."""
    return seal(content({"a": a}), revision=50, generated_at="2025-01-01T00:00:00Z")


async def test_reports_carry_revision_and_traffic(
    backend_urls: list[str], dp_settings: DataPlaneSettings, writer: SnapshotWriter, bus: Bus
) -> None:
    async with running_dataplane(dp_settings, listen_reports=bus) as dp:
        await writer.publish(content({"a": backend_urls[0]}), 1)
        await dp.wait_revision(1)
        await _served_by(dp, 3)
        await eventually(lambda: bool(dp.reports) and dp.reports[-1].requests_total == 3, what="report")
        report = dp.reports[-1]
        assert report.id == dp_settings.dataplane_id
        assert report.applied_revision == 1
        assert report.snapshot_error == ""
        assert report.in_flight == {}
        assert report.address == dp.url
        assert report.started_at.endswith("Z")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_starts_from_the_disk_cache_while_nats_is_unreachable(
    backend_urls: list[str], dp_settings: DataPlaneSettings, writer: SnapshotWriter, tmp_path: Path
) -> None:
    cache = tmp_path / "cache" / "snapshot.json"
    # A data plane with NATS writes each applied snapshot to its cache...
    async with running_dataplane(dataclasses.replace(dp_settings, snapshot_cache=cache)) as dp:
        await writer.publish(content({"a": backend_urls[0]}), 3)
        await dp.wait_revision(3)
        await eventually(cache.exists, what="cache written")
    # ...and a later one starts from it with NATS nowhere to be found.
    offline = dataclasses.replace(
        dp_settings, snapshot_cache=cache, nats_url=f"nats://127.0.0.1:{_closed_port()}"
    )
    async with running_dataplane(offline) as dp:
        ready = await dp.readyz()
        assert ready.status_code == 200
        assert ready.json()["revision"] == 3 and ready.json()["nats"] is False
        assert await _served_by(dp, 2) == ["a", "a"]


@pytest.mark.slow
async def test_keeps_serving_through_a_nats_restart_and_takes_the_next_snapshot(
    backend_urls: list[str], dp_settings: DataPlaneSettings, tmp_path: Path, bus_namespace: str
) -> None:
    a, b, _ = backend_urls
    nats = EmbeddedNats(tmp_path / "nats", port=_closed_port())
    url = nats.start()
    try:
        names = BusNames(bus_namespace)
        publisher = Bus(url, names)
        await publisher.connect()
        await SnapshotWriter(publisher).publish(content({"a": a}), 1)
        await publisher.close()

        async with running_dataplane(dataclasses.replace(dp_settings, nats_url=url)) as dp:
            await dp.wait_revision(1)
            nats.stop()
            await eventually(lambda: not dp.app.bus.connected, what="data plane notices NATS is gone")
            assert await _served_by(dp, 2) == ["a", "a"]
            assert (await dp.readyz()).status_code == 200

            nats.start()
            publisher = Bus(url, names)
            await publisher.connect()
            await SnapshotWriter(publisher).publish(content({"b": b}), 2)
            await publisher.close()
            await dp.wait_revision(2, within=20)
            assert await _served_by(dp, 2) == ["b", "b"]
    finally:
        nats.stop()


def test_the_cache_is_the_owners_only_and_an_open_one_is_closed(tmp_path: Path) -> None:
    """Written 0600 whatever the umask; a cache an older version left readable by others is made
    owner-only when it is loaded."""
    cache = tmp_path / "dp.snapshot"
    data = snapshot_bytes(content({"a": "http://127.0.0.1:1"}), 1)
    old_umask = os.umask(0)
    try:
        SnapshotState(cache_path=cache, trust=fixed_trust()).apply(data, source="test")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["dp.snapshot"]  # no temporary file left
    cache.chmod(0o644)
    state = SnapshotState(cache_path=cache, trust=fixed_trust())
    assert state.load_cache() and state.revision == 1
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
