"""When the publisher publishes after a change: at once after a quiet spell, after its debounce within
a burst. On the in-memory bus, with a debounce long enough that the two cases cannot be confused."""

from __future__ import annotations

import asyncio
import contextlib
import itertools

from controlplane.clock import Clock
from controlplane.publish.publisher import Publisher
from shared.memory_bus import MemoryBroker, MemoryBus
from shared.snapshot import FrontendView, SnapshotContent
from tests.dataplane.harness import eventually


async def test_a_change_after_a_quiet_spell_goes_out_at_once_and_one_in_a_burst_after_the_debounce() -> None:
    bus = MemoryBus(MemoryBroker())
    await bus.connect()
    revisions = itertools.count(1)
    tags = itertools.count()

    async def next_revision(*, at_least: int) -> int:
        return max(at_least, next(revisions))

    async def content(_previous: SnapshotContent | None, *, reread: bool = True) -> SnapshotContent:
        return SnapshotContent(frontends=(FrontendView(id=f"f{next(tags)}"),))  # every read differs

    publisher = Publisher(
        bus,
        content=content,
        next_revision=next_revision,
        clock=Clock(),
        interval=60,
        debounce=3.0,
        quiet=10.0,
    )
    running = asyncio.create_task(publisher.run())
    try:
        publisher.request(force=True)  # nothing published for a while: no debounce
        # Well under the debounce: a publisher that waited it could not have published yet.
        await eventually(lambda: publisher.revision > 0, within=1.5, what="the publish after a quiet spell")
        first = publisher.revision

        publisher.request(force=True)  # right after a round: more changes may follow, so it waits
        await asyncio.sleep(0.5)
        assert publisher.revision == first
        await eventually(lambda: publisher.revision > first, within=10.0, what="the publish within a burst")
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await bus.close()
