"""The snapshot publisher: builds a snapshot and stores it on the bus, safely among racing replicas.

When it publishes: promptly after a committed change (``request(force=True)``: at once when the last
round is a while ago, else after a short debounce that lets a burst land in one snapshot), when the
live data-plane set changes, at start, and every ``interval`` seconds. All but change-triggered
publishes are skipped when the content hash equals the stored one and the stored snapshot carries
this publisher's signature (so a new signing key is in use from the start).

How it stays monotonic: read the stored snapshot (revision and KV sequence) *before* reading the
configuration, take the next revision from the Postgres sequence but never below stored + 1, and write
with compare-and-set on the KV sequence. Losing the race (SnapshotConflict) means another writer
stored a snapshot after our read, so we read everything again and retry. With a signer, every
snapshot is signed (``shared.signing``) before it is stored. Any other failure (NATS or
the database down) keeps the request pending and retries after ``retry_after``.

Just before the write, a publish that knows the stored snapshot is its own last one sends the new one
as a delta of it (``shared.snapshot_delta``, a few hundred bytes on a core subject): data planes apply
that at once instead of waiting for the whole snapshot to be stored and delivered, and take the whole
one, when it arrives, as already known. A delta is only ever a shortcut: one lost, or sent for a write
that then fails, leaves data planes to the KV key as before (each delta names its base content, and
revisions come from one sequence, so a plane that took a delta of a write that failed moves on with
the next revision stored).

What "the stored snapshot" is may come from memory: after a successful write this publisher knows the
KV sequence, revision and content hash it left, and the next publish starts from them instead of a
read (a snapshot key holding a whole snapshot is up to a megabyte). That is safe because the write
is a compare-and-set on that very sequence: if anyone wrote since, it fails, and the retry reads the
bus. Only a publish that would be skipped as unchanged reads first, since the skip writes nothing
that could fail. The content of our last write is handed to the source as the stored content, so the
shares are not read back from the bus either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import msgspec

from controlplane.clock import Clock, rfc3339
from shared.bus import Bus
from shared.errors import BusError, SnapshotConflict
from shared.heap import HeapFreezer
from shared.signing import SnapshotSigner, sign
from shared.snapshot import Snapshot, SnapshotContent
from shared.snapshot_codec import SnapshotSealer

__all__ = ["PublishObserver", "PublishStatus", "Publisher"]

log = logging.getLogger("ollamaflow.controlplane.publisher")


class _StoredSignature(msgspec.Struct):
    key_id: str = ""


class _Stored(msgspec.Struct):
    """What we need of the stored snapshot; tolerant of anything else in it."""

    revision: int = 0
    content_hash: str = ""
    signature: _StoredSignature | None = None


_stored_decoder = msgspec.json.Decoder(_Stored)
_stored_encoder = msgspec.json.Encoder()


def _stored_header(data: bytes) -> _Stored:
    try:
        return _stored_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return _Stored()  # unreadable: overwrite it (the CAS still guards against a racing writer)


@dataclass(frozen=True, slots=True)
class PublishStatus:
    """How snapshot publishing goes, for /readyz and /v1.0/dataplanes on any replica."""

    revision: int = 0
    """The revision on the bus as of the leader's last publish (0: none yet or no leader known)."""
    last_error: str = ""
    """Why the leader's last publish failed; empty after a success."""


class PublishObserver(Protocol):
    """Told of every publish round (the metrics, ``controlplane.metrics``)."""

    def publish_round(self, result: str, seconds: float) -> None:
        """``result``: stored (a new revision), skipped (content unchanged) or failed."""


class Publisher:
    """Publishes snapshot revisions of the content ``content()`` returns."""

    def __init__(
        self,
        bus: Bus,
        *,
        content: Callable[..., Awaitable[SnapshotContent]],
        next_revision: Callable[..., Awaitable[int]],
        clock: Clock,
        interval: float,
        debounce: float = 0.005,
        quiet: float = 0.1,
        retry_after: float = 1.0,
        max_attempts: int = 20,
        signer: SnapshotSigner | None = None,
        freeze: bool = False,
    ) -> None:
        self._bus = bus
        self._signer = signer
        self._content = content
        self._next_revision = next_revision
        self._clock = clock
        self._interval = interval
        self._debounce = debounce
        self._quiet = quiet  # a request this long after the last round is published without the debounce
        self._last_round = float("-inf")  # monotonic end of the last publish round
        self._retry_after = retry_after
        self._max_attempts = max_attempts
        self._wake = asyncio.Event()
        self._force = False
        self.last: Snapshot | None = None
        """The last snapshot this publisher stored."""
        self.last_error = ""
        """Why the last publish failed; empty after a success."""
        self.revision = 0
        """The revision on the bus as of this publisher's last publish (or skip); 0 before."""
        self._written: tuple[bytes, int] | None = None  # (stored header, KV sequence) of our last write
        # Seals and encodes as shared.snapshot does, re-encoding only the views that changed.
        self._sealer = SnapshotSealer()
        # For the metrics (controlplane.metrics), read when scraped: the last stored snapshot's
        # encoded size (set in publish(), which has the bytes at hand).
        self.last_size = 0
        # ``freeze``: keep the collector off the heap once published (a control plane's own process).
        self._heap = HeapFreezer() if freeze else None
        self.observer: PublishObserver | None = None
        """Told of every publish round (the metrics' duration histogram, ``controlplane.metrics``)."""

    def request(self, *, force: bool = False) -> None:
        """Ask for a publish soon. ``force``: publish a new revision even if the content is unchanged."""
        self._force = self._force or force
        self._wake.set()

    async def publish(self, *, force: bool = False, eager: bool = False) -> Snapshot | None:
        """Store a new revision now; None if skipped because the stored content is already current.

        ``eager``: a change is expected (a request, not the interval's check), so the next revision
        number is drawn while the content is read, not after it; a skip then leaves a gap in the
        revisions, which only ever need to grow.
        """
        for attempt in range(self._max_attempts):
            began = time.perf_counter()
            stored = self._written if attempt == 0 else None
            if stored is None:
                stored = await self._bus.read_snapshot_head()  # the snapshot, or its manifest
            header = _stored_header(stored[0]) if stored else _Stored()
            last = self.last
            previous = last.content if last is not None and last.revision == header.revision else None
            drawn = (
                asyncio.ensure_future(self._next_revision(at_least=header.revision + 1))
                if eager or force
                else None
            )
            try:
                # A change of runtime state only (health, models, the live set): the configuration rows
                # need no new read. A forced publish (a configuration change), the interval's check
                # (which catches rows changed by hand) and any retry read them.
                content = await self._content(previous, reread=force or not eager or attempt > 0)
            except BaseException:
                await _settled(drawn)
                raise
            built = time.perf_counter()
            # Sealed once, with a provisional revision: the hash decides whether to publish at all.
            sealed = self._sealer.seal(content, revision=0, generated_at=rfc3339(self._clock.now()))
            # After a lost race the winner may already have stored exactly our content. Signed by
            # another key (a rotation) it is published again, so that data planes get our signature.
            current = sealed.content_hash == header.content_hash and self._signed_by_us(header)
            if current and (not force or attempt > 0):
                await _settled(drawn)
                if stored is self._written:  # known from memory only: make sure before skipping
                    self._written = None
                    continue
                self.revision = header.revision
                return None
            sealed_at = time.perf_counter()
            if drawn is not None:
                revision = await drawn
            else:
                revision = await self._next_revision(at_least=header.revision + 1)
            snapshot = msgspec.structs.replace(sealed, revision=revision)
            if self._signer is not None:
                snapshot = sign(snapshot, self._signer)
            data = self._sealer.encode(snapshot)
            if stored is not None and stored is self._written:  # the stored one is our last: the base
                await self._send_delta(snapshot)
            try:
                sequence = await self._bus.write_snapshot(
                    data,
                    last=stored[1] if stored else None,
                    revision=revision,
                    content_hash=snapshot.content_hash,
                    replaces=header.revision,
                )
            except SnapshotConflict:
                self._written = None
                self._sealer.published(None)
                log.debug("snapshot revision %d lost a race; retrying", revision)
                continue
            except BaseException:
                self._written = None
                self._sealer.published(None)
                raise
            self._sealer.published(snapshot)
            signed = _StoredSignature(self._signer.key_id) if self._signer is not None else None
            written = _Stored(revision, snapshot.content_hash, signed)
            self._written = (_stored_encoder.encode(written), sequence)
            self.last = snapshot
            self.revision = revision
            self.last_size = len(data)
            done = time.perf_counter()
            log.info(
                "published snapshot revision %d (%s, %d bytes) in %.1f ms: content %.1f, seal %.1f, "
                "revision and write %.1f",
                revision,
                snapshot.content_hash[:12],
                len(data),
                (done - began) * 1000,
                (built - began) * 1000,
                (sealed_at - built) * 1000,
                (done - sealed_at) * 1000,
            )
            return snapshot
        raise SnapshotConflict(f"gave up after {self._max_attempts} conflicting snapshot writes")

    async def _send_delta(self, snapshot: Snapshot) -> None:
        delta = self._sealer.delta(snapshot)
        if delta is None:
            return
        try:
            await self._bus.publish(self._bus.names.snapshot_delta_subject, delta)
        except BusError as exc:  # the write that follows fails too, or data planes take the whole
            log.debug("snapshot delta not sent: %s", exc.message)

    def _signed_by_us(self, header: _Stored) -> bool:
        stored_key = header.signature.key_id if header.signature is not None else None
        return stored_key == (self._signer.key_id if self._signer is not None else None)

    async def run(self) -> None:
        """Publish whenever asked and every ``interval`` seconds, until cancelled."""
        while True:
            requested = await self._wait()
            self._wake.clear()
            force, self._force = self._force, False
            started = time.perf_counter()
            try:
                snapshot = await self.publish(force=force, eager=requested)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._last_round = time.monotonic()
                self._observe("failed", started)
                self._failed(exc)
                self._force = self._force or force
                await asyncio.sleep(self._retry_after)
                self._wake.set()
            else:
                self._last_round = time.monotonic()
                self._observe("skipped" if snapshot is None else "stored", started)
                held = len(snapshot.content.backends) if snapshot is not None else 0
                if self._heap is not None and snapshot is not None and self._heap.due(held):
                    # The configuration is read and published: keep the collector off that heap.
                    self._heap.freeze(held)
                if self.last_error:
                    log.info("snapshot publishing works again")
                self.last_error = ""

    def _observe(self, result: str, started: float) -> None:
        if self.observer is not None:
            self.observer.publish_round(result, time.perf_counter() - started)

    async def _wait(self) -> bool:
        """Until asked (True) or the interval is up (False)."""
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=self._interval)
        except TimeoutError:
            return False
        # The first change after a quiet spell goes out at once: the debounce would only delay it. Within
        # a burst (the last round just ended), let the changes that follow land in one snapshot.
        if time.monotonic() - self._last_round < self._quiet:
            await asyncio.sleep(self._debounce)
        return True

    def _failed(self, exc: Exception) -> None:
        message = str(exc) or type(exc).__name__
        expected = isinstance(exc, BusError) or type(exc).__module__.startswith(("sqlalchemy", "psycopg"))
        if message != self.last_error:  # say it once, not every retry
            if expected:
                log.warning("cannot publish the snapshot yet: %s; retrying", message)
            else:
                log.error("snapshot publish failed; retrying", exc_info=exc)
        self.last_error = message


async def _settled(drawn: asyncio.Future[int] | None) -> None:
    """Wait for a revision drawn for nothing (its outcome is of no use; a failure shows elsewhere)."""
    if drawn is not None:
        with contextlib.suppress(Exception):
            await drawn
