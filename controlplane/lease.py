"""The control-plane lease: which replica probes, syncs models and publishes snapshots.

Any number of replicas serve the admin API; one at a time, the leader, does the work that must not
run twice. The lease is a key of the namespace's KV bucket (``BusNames.lease_key``) holding a
``LeaseValue``, written only with compare-and-set on its revision, so two replicas can never both
take it from the same state:

- the leader writes it again every ``renew_every`` seconds (a new revision each time);
- a follower reads it every ``poll_every`` seconds and takes it over (CAS on the revision it read)
  once the revision has not changed for the holder's ``ttl`` seconds, measured on its own monotonic
  clock from when it first saw that revision: no clock needs to agree with another machine's;
- nobody holds it (never taken, or released by a leader that stopped): the first to ``create`` wins;
- a replica finding its own id in the lease (it restarted quickly, or missed the ack of a renewal)
  takes it back at once.

Fencing: a leader counts itself leader only until ``ttl - margin`` seconds after it *started* its
last successful write. A follower's count starts after that write landed, so the old leader has
stepped down before anyone else can take over, even when it is cut off from NATS and cannot learn
that it lost. Worst case after a leader crashes: ``ttl + 2 * poll_every`` until another takes over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import msgspec

from controlplane.clock import Clock, rfc3339
from shared.bus import Bus
from shared.errors import BusError, LeaseConflict

__all__ = ["Lease", "LeaseValue"]

log = logging.getLogger("ollamaflow.controlplane.lease")


class LeaseValue(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What the lease key holds: who leads, where its admin API is, and how long the lease lasts."""

    holder: str
    address: str = ""
    ttl: float = 3.0
    since: str = ""
    """When this holder took the lease (RFC 3339, for people)."""
    renewed: str = ""
    """When it last wrote it (RFC 3339, for people; followers time the lease on their own clock)."""
    published_revision: int = 0
    """The snapshot revision on the bus as of the leader's last publish: followers show it."""
    publish_error: str = ""
    """Why the leader's last publish failed ("" when it worked): followers' /readyz says it too."""


_decoder = msgspec.json.Decoder(LeaseValue)


class Lease:
    """One replica's side of the lease election. ``run`` until cancelled, then ``release``."""

    def __init__(
        self,
        bus: Bus,
        *,
        holder: str,
        address: str,
        ttl: float,
        renew_every: float,
        clock: Clock,
        poll_every: float | None = None,
        publish_status: Callable[[], tuple[int, str]] = lambda: (0, ""),
    ) -> None:
        self._bus = bus
        self._publish_status = publish_status
        self.holder = holder
        self._address = address
        self.ttl = ttl
        self._renew_every = renew_every
        self.poll_every = poll_every if poll_every is not None else min(0.25, renew_every / 4)
        self._margin = min(0.5, ttl / 4)
        self._clock = clock
        self.leading = asyncio.Event()
        """Set while this replica holds the lease."""
        self.following = asyncio.Event()
        """Set while it does not."""
        self.following.set()
        self.leader: LeaseValue | None = None
        """The holder as last read (this replica's own value while it leads); None if nobody holds it."""
        self._revision: int | None = None  # of our own last write, while leading
        self._deadline = 0.0  # monotonic time at which a leader that could not renew steps down
        self._since = ""
        self._seen: tuple[int, float] | None = None  # a follower's (revision, monotonic time first seen)
        self._error = ""
        self.transitions = 0
        """How often this replica gained or lost the lease."""

    @property
    def is_leader(self) -> bool:
        return self.leading.is_set()

    async def run(self) -> None:
        """Take, hold and watch the lease until cancelled."""
        while True:
            started = self._clock.monotonic()
            try:
                if self.is_leader:
                    await asyncio.wait_for(self._renew(started), timeout=max(self._deadline - started, 0.001))
                else:
                    await self._follow(started)
            except (BusError, TimeoutError) as exc:
                self._failed(exc)
            else:
                if self._error:
                    log.info("the control-plane lease can be read and written again")
                self._error = ""
            now = self._clock.monotonic()
            if self.is_leader and now >= self._deadline:
                self._depose("it could not be renewed in time")
            if self.is_leader:
                await asyncio.sleep(max(min(self._renew_every - (now - started), self._deadline - now), 0.0))
            else:
                await asyncio.sleep(self.poll_every)

    async def release(self) -> None:
        """Give the lease up now (on a clean stop) so that another replica takes over at once.
        Call it once the leader's work has stopped."""
        revision = self._revision
        if revision is None:
            return
        self._depose("this control plane is stopping")
        try:
            await asyncio.wait_for(self._bus.release_lease(last=revision), timeout=2.0)
        except LeaseConflict:
            return  # it was no longer ours
        except (BusError, TimeoutError) as exc:
            log.warning(
                "cannot release the control-plane lease (%s): another replica takes it over once it expires",
                exc,
            )
            return
        log.info("released the control-plane lease")

    # -- the steps ---------------------------------------------------------------------------------

    async def _renew(self, started: float) -> None:
        try:
            revision = await self._bus.write_lease(self._value(), last=self._revision)
        except LeaseConflict:
            current = await self._bus.read_lease()
            if current is None or self._decode(current[0]).holder != self.holder:
                self._depose("another replica holds it")
                self._observe(current)
                return
            # Our own write, whose answer we missed: renew over it.
            revision = await self._bus.write_lease(self._value(), last=current[1])
        self._hold(revision, started)

    async def _follow(self, started: float) -> None:
        current = await self._bus.read_lease()
        if current is None:
            await self._claim(None, started)
            return
        value = self._decode(current[0])
        if value.holder == self.holder:  # ours, from before a restart: no need to wait
            await self._claim(current[1], started)
            return
        self._observe(current)
        seen = self._seen
        if seen is not None and self._clock.monotonic() - seen[1] >= value.ttl:
            log.warning(
                "the control-plane lease of %s was not renewed for %.1f s: taking over",
                value.holder,
                value.ttl,
            )
            await self._claim(current[1], started)

    async def _claim(self, last: int | None, started: float) -> None:
        self._since = rfc3339(self._clock.now())
        try:
            revision = await self._bus.write_lease(self._value(), last=last)
        except LeaseConflict:
            return  # another replica was faster: the next read says who
        self._hold(revision, started)

    def _observe(self, current: tuple[bytes, int] | None) -> None:
        """A follower's view of the lease: who holds it and since when this revision is unchanged."""
        if current is None:
            self.leader, self._seen = None, None
            return
        self.leader = self._decode(current[0])
        if self._seen is None or self._seen[0] != current[1]:
            # Timed from after the read: the holder's write came before, so its own count ends first.
            self._seen = (current[1], self._clock.monotonic())

    def _hold(self, revision: int, started: float) -> None:
        self._revision = revision
        self._deadline = started + self.ttl - self._margin
        self._seen = None
        self.leader = LeaseValue(holder=self.holder, address=self._address, ttl=self.ttl, since=self._since)
        if not self.is_leader:
            self.transitions += 1
            log.info("this control plane (%s) leads now: it probes, syncs models and publishes", self.holder)
            self.following.clear()
            self.leading.set()

    def _depose(self, why: str) -> None:
        self._revision = None
        if self.is_leader:
            self.transitions += 1
            log.warning("this control plane (%s) no longer leads: %s", self.holder, why)
            self.leading.clear()
            self.following.set()
            self.leader = None

    def _value(self) -> bytes:
        revision, error = self._publish_status()
        value = LeaseValue(
            published_revision=revision,
            publish_error=error[:500],
            holder=self.holder,
            address=self._address,
            ttl=self.ttl,
            since=self._since,
            renewed=rfc3339(self._clock.now()),
        )
        return msgspec.json.encode(value)

    def _decode(self, data: bytes) -> LeaseValue:
        try:
            return _decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            # Unreadable: someone else's, lasting our own TTL (a CAS still decides who takes it).
            return LeaseValue(holder="<unreadable>", ttl=self.ttl)

    def _failed(self, exc: Exception) -> None:
        message = "NATS did not answer in time" if isinstance(exc, TimeoutError) else str(exc)
        if message != self._error:  # say it once, not every poll
            log.warning("control-plane lease: %s", message)
        self._error = message
