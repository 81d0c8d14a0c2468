"""Snapshot deltas end to end on the in-memory bus: the real publisher sends each snapshot as a delta of
its last one before storing it, a data plane's real follower applies it, and takes the whole snapshot
that follows as already known; a delta signed by a stranger is refused like a forged snapshot."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator

import pytest

from controlplane.clock import Clock
from controlplane.publish.publisher import Publisher
from dataplane.follower import BusSync, ReportIdentity
from dataplane.limits.traffic import Traffic
from dataplane.state import SnapshotState
from shared.memory_bus import MemoryBroker, MemoryBus
from shared.signing import SnapshotSigner, sign
from shared.snapshot import SnapshotContent
from shared.snapshot_codec import SnapshotSealer
from shared.wire.reports import DataPlaneReport, decode_report
from tests.dataplane.harness import content, eventually
from tests.support.signing import fixed_signer, fixed_trust, other_signer


class Cluster:
    """A publisher and one data plane's follower on one broker, and what crossed the delta subject."""

    def __init__(self) -> None:
        self.broker = MemoryBroker()
        self.bus = MemoryBus(self.broker)
        self.content = content({"a": "http://10.0.0.1:11434"})
        self.revisions = itertools.count(1)
        self.publisher = Publisher(
            self.bus,
            content=self._content,
            next_revision=self._next_revision,
            clock=Clock(),
            interval=60,
            signer=SnapshotSigner(fixed_signer().private_key),
        )
        self.state = SnapshotState(trust=fixed_trust())
        self.reports: list[DataPlaneReport] = []
        self.deltas: list[bytes] = []
        self.sync = BusSync(
            MemoryBus(self.broker),
            self.state,
            Traffic(),
            ReportIdentity(id="dp-1", address="memory", started_at="2030-01-01T00:00:00Z"),
            poll_interval=0.05,
            report_interval=0.05,
        )

    async def _content(self, _previous: SnapshotContent | None, *, reread: bool = True) -> SnapshotContent:
        return self.content

    async def _next_revision(self, *, at_least: int) -> int:
        return max(at_least, next(self.revisions))


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    cluster = Cluster()
    await cluster.bus.connect()

    async def heard_delta(data: bytes) -> None:
        cluster.deltas.append(data)

    async def heard_report(data: bytes) -> None:
        cluster.reports.append(decode_report(data))

    await cluster.bus.subscribe(cluster.bus.names.snapshot_delta_subject, heard_delta)
    await cluster.bus.subscribe_reports(heard_report)
    task = asyncio.create_task(cluster.sync.run())
    yield cluster
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await cluster.bus.close()


def _applied(caplog: pytest.LogCaptureFixture, revision: int) -> list[str]:
    """Where each apply of ``revision`` came from, as the data plane logged it."""
    prefix = f"applied snapshot revision {revision} from "
    return [
        r.getMessage()[len(prefix) :].split(" in ")[0]
        for r in caplog.records
        if r.getMessage().startswith(prefix)
    ]


async def test_a_change_lands_by_its_delta_and_the_whole_that_follows_is_known(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ollamaflow.dataplane.state")
    first = await cluster.publisher.publish(force=True)
    assert first is not None
    await eventually(lambda: cluster.state.revision == first.revision, what="the first snapshot applied")
    assert cluster.deltas == []  # nothing was stored before: no base to tell it against

    cluster.content = content({"a": "http://10.0.0.2:11434"})
    second = await cluster.publisher.publish(force=True)
    assert second is not None
    await eventually(lambda: cluster.state.revision == second.revision, what="the change applied")
    assert len(cluster.deltas) == 1
    assert cluster.state.snapshot is not None
    assert cluster.state.snapshot.content.backends[0].base_url == "http://10.0.0.2:11434"
    # The watch brought the whole snapshot too (the re-read as well): neither applied it again.
    stored = await cluster.bus.read_snapshot()
    assert stored is not None
    assert not cluster.state.apply(stored[0], source="test")
    await asyncio.sleep(0.2)  # a few polls
    assert _applied(caplog, second.revision) == ["delta"]
    await eventually(lambda: any(r.applied_revision == second.revision for r in cluster.reports))


async def test_a_delta_signed_by_a_stranger_is_refused_and_the_last_good_snapshot_stays(
    cluster: Cluster,
) -> None:
    first = await cluster.publisher.publish(force=True)
    assert first is not None
    await eventually(lambda: cluster.state.revision == first.revision, what="the first snapshot applied")
    # Someone with the base at hand makes a delta of their own content and signs it with their key.
    forger = SnapshotSealer()
    base = sign(
        forger.seal(first.content, revision=first.revision, generated_at=first.generated_at), other_signer()
    )
    forger.published(base)
    evil = forger.seal(
        content({"a": "http://evil:1"}), revision=first.revision + 1, generated_at="2030-01-01T00:00:00Z"
    )
    delta = forger.delta(sign(evil, other_signer()))
    assert delta is not None
    await cluster.bus.publish(cluster.bus.names.snapshot_delta_subject, delta)
    await eventually(lambda: any("not trusted" in r.snapshot_error for r in cluster.reports))
    assert cluster.state.revision == first.revision
    assert cluster.state.snapshot is not None
    assert cluster.state.snapshot.content.backends[0].base_url == "http://10.0.0.1:11434"
