"""The pure core of admission: per-backend slots and token buckets, and the frontends' queues.

``Gates`` decides; the caller passes the time in and receives requests for timers through
``schedule``. ``dataplane.limits.admission`` runs it on the event loop. The rules are described there.

A backend's limit of 0 means none: MaxParallelRequests 0 gives its gate ``UNLIMITED`` slots, and
RateLimitRequestsThreshold 0 a bucket of infinite rate that always has a token, whatever share the
snapshot publishes for it (``controlplane.publish.shares`` publishes none, or placeholders).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from dataplane.routing.strategies import UNLIMITED
from dataplane.routing.table import Target
from shared.errors import OllamaFlowError
from shared.snapshot import ApiFormat, BackendShare, SnapshotContent
from shared.wire import ollama, openai

if TYPE_CHECKING:
    import asyncio

__all__ = ["Gate", "Gates", "QueueRejected", "TokenBucket", "Waiter", "shares_for"]

# Longest Retry-After we suggest (openai-python ignores longer ones and backs off on its own).
MAX_RETRY_AFTER = 60
# Added to a refill timer so that the token is surely there when it fires (float rounding).
REFILL_SLACK = 0.001


class QueueRejected(OllamaFlowError):
    """Every candidate backend is at its limit and the request cannot wait (any longer)."""

    status = 503

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def response(self, api_format: ApiFormat) -> tuple[int, bytes, tuple[bytes, bytes]]:
        """Status, body and Retry-After header: Ollama's busy 503, or OpenAI's 429 rate limit."""
        header = (b"retry-after", b"%d" % self.retry_after)
        if api_format == "OpenAI":
            return 429, openai.error_body(self.message, 429, code="rate_limit_exceeded"), header
        return 503, ollama.error_body(self.message), header


class TokenBucket:
    """``rate`` tokens a second, holding at most one second's worth (at least one token). An infinite
    rate always has a token (no limit)."""

    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.stamp = now

    def _refill(self, now: float) -> None:
        elapsed = now - self.stamp
        # (inf tokens minus one stay inf: an unlimited bucket never runs dry.)
        if elapsed > 0:
            self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
            self.stamp = now

    def ready(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= 1.0

    def take(self, now: float) -> bool:
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def delay(self, now: float) -> float:
        """Seconds until the next token."""
        self._refill(now)
        return max(0.0, (1.0 - self.tokens) / self.rate)

    def retune(self, rate: float, now: float) -> None:
        self._refill(now)
        self.rate = rate
        self.capacity = max(1.0, rate)
        # Into no limit: full at once (an infinite rate refills only once time moves on).
        self.tokens = self.capacity if math.isinf(rate) else min(self.tokens, self.capacity)


class Waiter:
    """A request in a queue: its candidates in preference order, and the one it got, once it did."""

    __slots__ = ("candidates", "frontend_id", "future", "granted", "queued", "since")

    def __init__(self, candidates: Sequence[Target], frontend_id: str, since: float) -> None:
        self.candidates = candidates
        self.frontend_id = frontend_id
        self.since = since
        self.granted: Target | None = None
        self.queued = False
        self.future: asyncio.Future[None] | None = None  # the event loop's part (``Admission``)


class Gate:
    """One backend's share for this data plane: slots, a token bucket, and who waits for it."""

    __slots__ = ("backend_id", "bucket", "in_flight", "max_parallel", "refill_due", "share", "waiters")

    def __init__(self, backend_id: str, share: BackendShare, now: float) -> None:
        self.backend_id = backend_id
        self.in_flight = 0
        self.waiters: deque[Waiter] = deque()
        self.refill_due = False  # a timer will wake this gate when its next token is there
        self.share = _parallel(share)  # the slots the snapshot gives this data plane
        self.max_parallel = self.share  # the slots it uses now: below ``share`` while a raise waits
        self.bucket = TokenBucket(_rate(share), now)  # starts full

    def retune(self, share: BackendShare, now: float) -> None:
        """Take a new share: a cut at once, a raise only as far as ``Gates._settle`` finds room."""
        self.share = _parallel(share)
        self.max_parallel = min(self.max_parallel, self.share)
        self.bucket.retune(_rate(share), now)


# A share without a positive rate takes no requests at all (the bucket's rate itself must stay > 0).
def _parallel(share: BackendShare) -> int:
    return max(0, share.max_parallel) if share.rate_per_second > 0 else 0


def _rate(share: BackendShare) -> float:
    return share.rate_per_second if share.rate_per_second > 0 else 1.0


def shares_for(content: SnapshotContent, dataplane_id: str) -> dict[str, BackendShare]:
    """This data plane's share of every backend: as published, else an even split (see above); a
    limit of 0 (none) is ``UNLIMITED`` slots or an infinite rate, whatever was published."""
    planes = content.cluster.dataplanes
    mine = next((plane.shares for plane in planes if plane.id == dataplane_id), {})
    split = sum(1 for plane in planes if plane.id != dataplane_id) + 1
    shares: dict[str, BackendShare] = {}
    for backend in content.backends:
        total, rate = backend.max_parallel_requests, backend.rate_limit_requests_threshold
        share = mine.get(backend.id)
        if total > 0 and rate > 0 and share is not None:
            shares[backend.id] = share
            continue
        slots, per_second = UNLIMITED, math.inf
        if total > 0:
            slots = share.max_parallel if share is not None else max(1, total // split)
        if rate > 0:
            per_second = share.rate_per_second if share is not None else rate / split
        shares[backend.id] = BackendShare(max_parallel=slots, rate_per_second=per_second)
    return shares


class Gates:
    """The pure core: every backend's gate, the waiting requests, and the decisions over them.

    Requests that ``release``, ``refill`` or ``configure`` hand capacity to are appended to
    ``granted`` (their ``granted`` target set); the caller drains that list.
    """

    def __init__(self, dataplane_id: str, schedule: Callable[[str, float], None]) -> None:
        self.dataplane_id = dataplane_id
        self.granted: list[Waiter] = []
        self._schedule = schedule  # (backend id, delay in seconds): call ``refill`` then
        self._gates: dict[str, Gate] = {}
        self._queued: dict[str, int] = {}  # frontend id -> its waiting requests
        # Backend id -> this data plane's max_parallel share: the strategies weigh load against it.
        self.limits: dict[str, int] = {}
        self._revision = 0
        self._totals: dict[str, int] = {}  # backend id -> its MaxParallelRequests
        # The other data planes the snapshot lists (none if it does not list this one): plane id ->
        # backend id -> that plane's slots; and what each last reported: (revision, in flight).
        self._others: dict[str, dict[str, int]] = {}
        self._peers: dict[str, tuple[int, Mapping[str, int]]] = {}
        # What the limits were computed from (the planes' shares and each backend's limits): a
        # snapshot that changes neither (most admin writes, health changes) only moves the revision.
        self._inputs: tuple[object, ...] | None = None

    def gate(self, backend_id: str) -> Gate | None:
        return self._gates.get(backend_id)

    def configure(self, content: SnapshotContent, now: float, revision: int = 0) -> None:
        """Take the limits of a new snapshot; gates keep their in-flight counts and waiters."""
        inputs = (
            content.cluster.dataplanes,
            tuple((b.id, b.max_parallel_requests, b.rate_limit_requests_threshold) for b in content.backends),
        )
        if inputs == self._inputs:
            self._revision = revision
            for backend_id, gate in list(self._gates.items()):
                if backend_id not in self._totals and not gate.in_flight and not gate.waiters:
                    del self._gates[backend_id]  # gone from the snapshot, and now released
                    self.limits.pop(backend_id, None)
                elif gate.max_parallel < gate.share:  # a held raise: settled against the new revision
                    self._settle(gate)
                    self.limits[backend_id] = gate.max_parallel
                    if gate.waiters:
                        self._wake(gate, now)
            return
        self._inputs = inputs
        me = self.dataplane_id
        shares = shares_for(content, me)
        planes = content.cluster.dataplanes
        self._revision = revision
        self._totals = {backend.id: backend.max_parallel_requests for backend in content.backends}
        listed = any(plane.id == me for plane in planes)
        self._others = {
            plane.id: {b: share.max_parallel for b, share in shares_for(content, plane.id).items()}
            for plane in planes
            if listed and plane.id != me
        }
        self._peers = {plane: peer for plane, peer in self._peers.items() if plane in self._others}
        gates = self._gates
        for backend_id, share in shares.items():
            gate = gates.get(backend_id)
            if gate is None:  # a new backend: nobody has requests on it to overlap
                gates[backend_id] = Gate(backend_id, share, now)
            else:
                gate.retune(share, now)
                self._settle(gate)
        for backend_id, gate in list(gates.items()):
            if backend_id not in shares and not gate.in_flight and not gate.waiters:
                del gates[backend_id]  # gone from the snapshot and nothing left to account for
        self.limits = {backend_id: gate.max_parallel for backend_id, gate in gates.items()}
        for gate in list(gates.values()):
            if gate.waiters:  # a raised limit frees capacity
                self._wake(gate, now)

    def observe(self, plane: str, revision: int, in_flight: Mapping[str, int], now: float) -> None:
        """Another data plane's report: the revision it applied and its requests in flight."""
        if plane not in self._others:
            return
        self._peers[plane] = (revision, in_flight)
        raised = False
        for gate in self._gates.values():
            if gate.max_parallel < gate.share:
                before = gate.max_parallel
                self._settle(gate)
                if gate.max_parallel > before:
                    raised = True
                    if gate.waiters:
                        self._wake(gate, now)
        if raised:
            self.limits = {backend_id: gate.max_parallel for backend_id, gate in self._gates.items()}

    def _settle(self, gate: Gate) -> None:
        """Raise ``gate`` towards its share as far as the other data planes leave room."""
        if gate.max_parallel < gate.share:
            if gate.share >= UNLIMITED:  # no limit any more: nothing to overlap
                gate.max_parallel = gate.share
                return
            gate.max_parallel = max(gate.max_parallel, min(gate.share, self._room(gate.backend_id)))

    def _room(self, backend_id: str) -> int:
        """The backend's limit minus, per other listed data plane, the larger of its share and its
        reported load; 0 while one has not reported since it applied this revision (it may still
        use an older, larger share)."""
        if not self._others:
            return self._totals.get(backend_id, 0)
        used = 0
        for plane, slots in self._others.items():
            peer = self._peers.get(plane)
            if peer is None or peer[0] < self._revision:
                return 0
            used += max(slots.get(backend_id, 0), peer[1].get(backend_id, 0))
        return self._totals.get(backend_id, 0) - used

    def admit(self, candidates: Sequence[Target], now: float) -> Target | None:
        """The first candidate with a free slot and a token, taken; None if the request must wait."""
        gates = self._gates
        for target in candidates:
            gate = gates.get(target.id)
            if gate is None:  # not in the applied snapshot (it changed under the request): no limit
                return target
            if not gate.waiters and gate.in_flight < gate.max_parallel and gate.bucket.take(now):
                gate.in_flight += 1
                return target
        return None

    def release(self, backend_id: str, now: float) -> None:
        gate = self._gates.get(backend_id)
        if gate is None:
            return
        if gate.in_flight > 0:
            gate.in_flight -= 1
        if gate.waiters:
            self._wake(gate, now)

    def refill(self, backend_id: str, now: float) -> None:
        """The timer asked for by ``schedule`` fired."""
        gate = self._gates.get(backend_id)
        if gate is not None:
            gate.refill_due = False
            self._wake(gate, now)

    def enqueue(self, waiter: Waiter, queue_size: int, now: float) -> bool:
        """Queue ``waiter`` behind everyone already waiting; False if its frontend's queue is full."""
        count = self._queued.get(waiter.frontend_id, 0)
        if count >= queue_size:
            return False
        self._queued[waiter.frontend_id] = count + 1
        waiter.queued = True
        for target in waiter.candidates:
            gate = self._gates.get(target.id)
            if gate is not None:
                gate.waiters.append(waiter)
                if gate.in_flight < gate.max_parallel:  # only the rate holds it back
                    self._wake(gate, now)
        return True

    def leave(self, waiter: Waiter) -> None:
        """Take ``waiter`` out of the queue (granted, expired or its client gone)."""
        if not waiter.queued:
            return
        waiter.queued = False
        for target in waiter.candidates:
            gate = self._gates.get(target.id)
            if gate is not None and waiter in gate.waiters:
                gate.waiters.remove(waiter)
        count = self._queued[waiter.frontend_id] - 1
        if count:
            self._queued[waiter.frontend_id] = count
        else:
            del self._queued[waiter.frontend_id]

    def queued(self) -> dict[str, int]:
        """Backend id -> waiting requests that have it among their candidates."""
        return {backend_id: len(gate.waiters) for backend_id, gate in self._gates.items() if gate.waiters}

    def queued_by_frontend(self) -> dict[str, int]:
        """Frontend id -> its waiting requests."""
        return dict(self._queued)

    def retry_after(self, candidates: Sequence[Target]) -> int:
        """Whole seconds after which trying again is likely to find room, from the rates: the
        longest queue among the candidates drained at their combined rate."""
        gates = [gate for target in candidates if (gate := self._gates.get(target.id)) is not None]
        rate = sum(gate.bucket.rate for gate in gates if gate.max_parallel)
        if rate <= 0:
            return MAX_RETRY_AFTER
        ahead = max((len(gate.waiters) for gate in gates), default=0)
        return min(MAX_RETRY_AFTER, max(1, math.ceil((ahead + 1) / rate)))

    def _wake(self, gate: Gate, now: float) -> None:
        """Hand free capacity on ``gate`` to its oldest waiters, as long as there is some."""
        while gate.waiters and gate.in_flight < gate.max_parallel:
            if not gate.bucket.ready(now):
                if not gate.refill_due:
                    gate.refill_due = True
                    self._schedule(gate.backend_id, gate.bucket.delay(now) + REFILL_SLACK)
                return
            waiter = gate.waiters[0]
            target = self._take_for(waiter, now)
            if target is None:  # cannot happen: this gate itself qualifies; never spin on it
                return
            self.leave(waiter)
            waiter.granted = target
            self.granted.append(waiter)

    def _take_for(self, waiter: Waiter, now: float) -> Target | None:
        """The first of ``waiter``'s candidates it may take now, taken: free, and nobody older waiting."""
        gates = self._gates
        for target in waiter.candidates:
            gate = gates.get(target.id)
            if gate is None:
                return target
            if (
                gate.in_flight < gate.max_parallel
                and (not gate.waiters or gate.waiters[0] is waiter)
                and gate.bucket.take(now)
            ):
                gate.in_flight += 1
                return target
        return None
