"""Admission: how many requests each backend takes from this data plane, and a queue for the rest.

A backend's ``MaxParallelRequests`` and ``RateLimitRequestsThreshold`` (requests per second) hold for
the cluster as a whole. The control plane splits them among the live data planes and publishes each
one's share in the snapshot (``cluster.dataplanes[id].shares``); this module enforces this data plane's
share with a slot count and a token bucket per backend. Until the control plane has assigned a share
(a new data plane, a new backend, an older control plane), each data plane takes an even split over
the data planes the snapshot lists, so for a moment the sum over all of them may exceed the limit.

When the control plane moves slots between data planes, a cut applies at once, but a raise waits
until every other listed data plane has reported (``observe``) that it applied the same revision, and
takes only the slots their shares and reported in-flight requests leave: a plane that still drains
requests from its larger old share is never overlapped, so the sum stays within the limit.

A request takes the first of its candidate backends, in the order its strategy gave, that has a free
slot and a token. When none has, it waits in its frontend's bounded FIFO queue; whenever capacity frees
on a backend (a slot released, a token refilled, a limit raised) the oldest waiting request that has
that backend among its candidates gets it. A new request never overtakes one that waits for the same
backend. A full queue or an expired wait is ``QueueRejected``.

``Gates`` (``dataplane.limits.gates``) is the pure decision core: the caller passes the time in and
receives requests for timers through ``schedule``. ``Admission`` here wraps it for the event loop
(futures, timers, the clock).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from dataplane.limits.gates import Gates, QueueRejected, Waiter
from dataplane.routing.table import Target
from shared.snapshot import FrontendView, Snapshot
from shared.wire.reports import DataPlaneReport

__all__ = ["Admission", "QueueRejected"]


class Admission:
    """``Gates`` on the event loop: waiting requests are futures, refills are timers.

    ``refresh`` is called with each snapshot the data plane applies (``SnapshotState.listeners``);
    the per-snapshot work (shares, gates) happens there, once, not on the request path.
    """

    def __init__(self, dataplane_id: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.gates = Gates(dataplane_id, self._schedule)
        self._applied: Snapshot | None = None

    def refresh(self, snapshot: Snapshot | None) -> None:
        if snapshot is not self._applied and snapshot is not None:
            self._applied = snapshot
            self.gates.configure(snapshot.content, self._clock(), snapshot.revision)
            self._grant()

    def observe(self, report: DataPlaneReport) -> None:
        """A report of another data plane (its own are ignored): may release a held raise."""
        self.gates.observe(report.id, report.applied_revision, report.in_flight, self._clock())
        self._grant()

    def admit(self, candidates: Sequence[Target]) -> Target | None:
        return self.gates.admit(candidates, self._clock())

    def release(self, backend_id: str) -> None:
        gates = self.gates
        gates.release(backend_id, self._clock())
        if gates.granted:
            self._grant()

    def queued(self) -> dict[str, int]:
        return self.gates.queued()

    async def wait(self, candidates: Sequence[Target], frontend: FrontendView) -> tuple[Target, float]:
        """Queue until a candidate has room; the one taken and the seconds waited.

        Raises ``QueueRejected`` when the frontend's queue is full or the wait expires. A cancelled
        wait (the client left) leaves the queue, and gives back a slot it was handed meanwhile.
        """
        now = self._clock()
        waiter = Waiter(candidates, frontend.id, now)
        gates = self.gates
        if not gates.enqueue(waiter, frontend.queue_size, now):
            raise QueueRejected(
                f"server busy, please try again: every backend for this request is at its limit and "
                f"the queue of frontend {frontend.id!r} is full ({frontend.queue_size} waiting)",
                gates.retry_after(candidates),
            )
        waiter.future = future = asyncio.get_running_loop().create_future()
        if gates.granted:  # enqueueing may have woken it (or others) at once
            self._grant()
        timer = future.get_loop().call_later(frontend.queue_timeout_ms / 1000.0, self._expire, waiter)
        try:
            await future
        except BaseException:
            if waiter.granted is not None:
                self.release(waiter.granted.id)
            else:
                gates.leave(waiter)
            raise
        finally:
            timer.cancel()
        if waiter.granted is None:
            raise QueueRejected(
                f"server busy, please try again: no backend for this request had room within the "
                f"{frontend.queue_timeout_ms} ms that frontend {frontend.id!r} lets a request wait",
                gates.retry_after(candidates),
            )
        return waiter.granted, self._clock() - waiter.since

    def _grant(self) -> None:
        granted = self.gates.granted
        while granted:
            future = granted.pop().future
            if future is not None and not future.done():
                future.set_result(None)
            # A done future: its task was cancelled and gives the slot back when it resumes.

    def _expire(self, waiter: Waiter) -> None:
        if waiter.granted is None and waiter.future is not None and not waiter.future.done():
            self.gates.leave(waiter)
            waiter.future.set_result(None)

    def _schedule(self, backend_id: str, delay: float) -> None:
        asyncio.get_running_loop().call_later(delay, self._refill, backend_id)

    def _refill(self, backend_id: str) -> None:
        self.gates.refill(backend_id, self._clock())
        self._grant()
