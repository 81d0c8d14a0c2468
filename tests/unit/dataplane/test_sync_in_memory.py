"""The data plane's snapshot follower and reports on the in-memory bus: the same logic the NATS tests
(test_snapshots.py) drive, without a server or a socket, in well under a second."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import msgspec
import pytest

from dataplane.follower import BusSync, ReportIdentity
from dataplane.limits.traffic import Traffic
from dataplane.state import SnapshotState
from shared.memory_bus import MemoryBroker, MemoryBus
from shared.pieces import encode_manifest
from shared.signing import sign
from shared.snapshot import seal
from shared.wire.reports import DataPlaneReport, decode_report
from tests.dataplane.harness import content, eventually, snapshot_bytes
from tests.support.signing import fixed_trust, other_signer


class Follower:
    """A data plane's sync on the broker, and the reports the broker carried."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.state = SnapshotState(trust=fixed_trust())
        self.reports: list[DataPlaneReport] = []
        self.writer = MemoryBus(broker)
        self.sync = BusSync(
            MemoryBus(broker),
            self.state,
            Traffic(),
            ReportIdentity(id="dp-1", address="memory", started_at="2030-01-01T00:00:00Z"),
            poll_interval=0.05,
            report_interval=0.05,
        )

    async def publish(self, data: bytes) -> None:
        stored = await self.writer.read_snapshot_head()
        await self.writer.write_snapshot(data, last=stored[1] if stored else None)


@pytest.fixture
async def follower() -> AsyncIterator[Follower]:
    broker = MemoryBroker()
    follower = Follower(broker)
    await follower.writer.connect()

    async def heard(data: bytes) -> None:
        follower.reports.append(decode_report(data))

    await follower.writer.subscribe_reports(heard)
    task = asyncio.create_task(follower.sync.run())
    yield follower
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await follower.writer.close()


async def test_each_new_snapshot_is_applied_and_reported(follower: Follower) -> None:
    for revision in (1, 2, 3):
        await follower.publish(snapshot_bytes(content({"a": f"http://10.0.0.{revision}:11434"}), revision))
        await eventually(lambda revision=revision: follower.state.revision == revision)  # type: ignore[misc]
    assert follower.state.snapshot is not None
    assert follower.state.snapshot.content.backends[0].base_url == "http://10.0.0.3:11434"
    await eventually(lambda: any(r.applied_revision == 3 for r in follower.reports))
    assert all(r.id == "dp-1" and r.snapshot_error == "" for r in follower.reports)


async def test_a_forged_snapshot_is_refused_and_reported_while_the_last_good_one_stays(
    follower: Follower,
) -> None:
    await follower.publish(snapshot_bytes(content({"a": "http://10.0.0.1:11434"}), 1))
    await eventually(lambda: follower.state.revision == 1)
    forged = sign(
        seal(content({"a": "http://evil:1"}), revision=2, generated_at="2030-01-01T00:00:00Z"),
        other_signer(),
    )
    await follower.publish(msgspec.json.encode(forged))
    await eventually(lambda: any(r.snapshot_error for r in follower.reports))
    assert follower.state.revision == 1
    assert follower.state.snapshot is not None
    assert follower.state.snapshot.content.backends[0].base_url == "http://10.0.0.1:11434"
    assert "revision 2" in next(r.snapshot_error for r in follower.reports if r.snapshot_error)


async def test_a_manifest_of_the_applied_or_an_older_snapshot_is_not_fetched(follower: Follower) -> None:
    """The pieces a manifest names are fetched only for a snapshot this plane needs: not for the one it
    applied (from a delta), nor for an older one a re-read met after the watch brought a newer one.
    Here a fetch would fail loudly: the in-memory bus hands the manifest itself over as the snapshot."""
    await follower.publish(snapshot_bytes(content({"a": "http://10.0.0.1:11434"}), 5))
    await eventually(lambda: follower.state.revision == 5)
    applied = follower.state.snapshot
    assert applied is not None
    for revision, content_hash in ((5, applied.content_hash), (3, "f" * 64)):
        await follower.publish(
            encode_manifest(b"x" * 10, 1, schema=1, revision=revision, content_hash=content_hash)
        )
        await asyncio.sleep(0.2)  # several re-reads
        assert (follower.state.revision, follower.state.rejected, follower.state.error) == (5, False, "")
    # A manifest of a newer revision is fetched (and here, being no snapshot, refused).
    await follower.publish(encode_manifest(b"x" * 10, 1, schema=1, revision=6, content_hash="e" * 64))
    await eventually(lambda: follower.state.rejected)
    assert follower.state.revision == 5
