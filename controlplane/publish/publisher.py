"""The snapshot publisher: builds a snapshot and stores it on the bus, safely among racing replicas.

When it publishes: promptly after a committed change (``request(force=True)``, bursts coalesced by a
short debounce), when the live data-plane set changes, at start, and every ``interval`` seconds. All
but change-triggered publishes are skipped when the content hash equals the stored one.

How it stays monotonic: read the stored snapshot (revision and KV sequence) *before* reading the
configuration, take the next revision from the Postgres sequence but never below stored + 1, and write
with compare-and-set on the KV sequence. Losing the race (SnapshotConflict) means another writer
stored a snapshot after our read, so we read everything again and retry. Any other failure (NATS or
the database down) keeps the request pending and retries after ``retry_after``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import msgspec

from controlplane.clock import Clock, rfc3339
from shared.bus import Bus
from shared.errors import BusError, SnapshotConflict
from shared.snapshot import Snapshot, SnapshotContent, content_hash, encode, seal

__all__ = ["Publisher"]

log = logging.getLogger("ollamaflow.controlplane.publisher")


class _Stored(msgspec.Struct):
    """What we need of the stored snapshot; tolerant of anything else in it."""

    revision: int = 0
    content_hash: str = ""


_stored_decoder = msgspec.json.Decoder(_Stored)


def _stored_header(data: bytes) -> _Stored:
    try:
        return _stored_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return _Stored()  # unreadable: overwrite it (the CAS still guards against a racing writer)


class Publisher:
    """Publishes snapshot revisions of the content ``content()`` returns."""

    def __init__(
        self,
        bus: Bus,
        *,
        content: Callable[[], Awaitable[SnapshotContent]],
        next_revision: Callable[..., Awaitable[int]],
        clock: Clock,
        interval: float,
        debounce: float = 0.005,
        retry_after: float = 1.0,
        max_attempts: int = 20,
    ) -> None:
        self._bus = bus
        self._content = content
        self._next_revision = next_revision
        self._clock = clock
        self._interval = interval
        self._debounce = debounce
        self._retry_after = retry_after
        self._max_attempts = max_attempts
        self._wake = asyncio.Event()
        self._force = False
        self.last: Snapshot | None = None
        """The last snapshot this publisher stored."""
        self.last_error = ""
        """Why the last publish failed; empty after a success."""
        # For the metrics (controlplane.metrics), read when scraped: publishes stored, skipped
        # (content unchanged) and failed, their time in all, and the last one's encoded size.
        self.published = self.skipped = self.failed = 0
        self.seconds = 0.0
        self.last_size = 0

    def request(self, *, force: bool = False) -> None:
        """Ask for a publish soon. ``force``: publish a new revision even if the content is unchanged."""
        self._force = self._force or force
        self._wake.set()

    async def publish(self, *, force: bool = False) -> Snapshot | None:
        """Store a new revision now; None if skipped because the stored content is already current."""
        for attempt in range(self._max_attempts):
            stored = await self._bus.read_snapshot()
            header = _stored_header(stored[0]) if stored else _Stored()
            content = await self._content()
            digest = content_hash(content)
            # After a lost race the winner may already have stored exactly our content.
            if digest == header.content_hash and (not force or attempt > 0):
                return None
            revision = await self._next_revision(at_least=header.revision + 1)
            snapshot = seal(content, revision=revision, generated_at=rfc3339(self._clock.now()))
            try:
                await self._bus.write_snapshot(encode(snapshot), last=stored[1] if stored else None)
            except SnapshotConflict:
                log.debug("snapshot revision %d lost a race; retrying", revision)
                continue
            self.last = snapshot
            log.info("published snapshot revision %d (%s)", revision, digest[:12])
            return snapshot
        raise SnapshotConflict(f"gave up after {self._max_attempts} conflicting snapshot writes")

    async def run(self) -> None:
        """Publish whenever asked and every ``interval`` seconds, until cancelled."""
        while True:
            await self._wait()
            self._wake.clear()
            force, self._force = self._force, False
            started = time.perf_counter()
            try:
                snapshot = await self.publish(force=force)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failed += 1
                self._failed(exc)
                self._force = self._force or force
                await asyncio.sleep(self._retry_after)
                self._wake.set()
            else:
                self.seconds += time.perf_counter() - started
                if snapshot is None:
                    self.skipped += 1
                else:
                    self.published += 1
                    self.last_size = len(encode(snapshot))
                if self.last_error:
                    log.info("snapshot publishing works again")
                self.last_error = ""

    async def _wait(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=self._interval)
            # Let a burst of changes land in one snapshot.
            await asyncio.sleep(self._debounce)

    def _failed(self, exc: Exception) -> None:
        message = str(exc) or type(exc).__name__
        expected = isinstance(exc, BusError) or type(exc).__module__.startswith(("sqlalchemy", "psycopg"))
        if message != self.last_error:  # say it once, not every retry
            if expected:
                log.warning("cannot publish the snapshot yet: %s; retrying", message)
            else:
                log.error("snapshot publish failed; retrying", exc_info=exc)
        self.last_error = message
