"""Admission's decisions with the time passed in: shares, slots, token buckets, the FIFO queue; and
its event-loop shell (waiting, expiry, a client leaving) with a clock the test sets."""

from __future__ import annotations

import asyncio
import json

import pytest

from dataplane.limits.admission import Admission
from dataplane.limits.gates import Gates, QueueRejected, TokenBucket, Waiter, shares_for
from dataplane.routing.table import Target
from shared.snapshot import (
    BackendShare,
    BackendView,
    ClusterView,
    DataPlaneView,
    FrontendView,
    SnapshotContent,
    seal,
)

ME = "dp-me"


def _backend(backend_id: str, parallel: int = 1, rate: int = 1000) -> BackendView:
    return BackendView(
        id=backend_id,
        base_url="http://127.0.0.1:9",
        max_parallel_requests=parallel,
        rate_limit_requests_threshold=rate,
    )


def _content(*backends: BackendView, planes: tuple[DataPlaneView, ...] = ()) -> SnapshotContent:
    return SnapshotContent(backends=backends, cluster=ClusterView(dataplanes=planes))


def _targets(*backend_ids: str) -> dict[str, Target]:
    return {i: Target.from_backend(_backend(i)) for i in backend_ids}


class _Timers:
    """What ``Gates`` asked to be woken for: (backend id, delay)."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, float]] = []

    def __call__(self, backend_id: str, delay: float) -> None:
        self.asked.append((backend_id, delay))


def _gates(content: SnapshotContent, now: float = 0.0) -> tuple[Gates, _Timers]:
    timers = _Timers()
    gates = Gates(ME, timers)
    gates.configure(content, now)
    return gates, timers


def _granted(gates: Gates) -> list[tuple[Waiter, str]]:
    out = [(w, w.granted.id) for w in gates.granted if w.granted is not None]
    gates.granted.clear()
    return out


def test_a_token_bucket_holds_one_seconds_worth_and_refills_at_its_rate() -> None:
    bucket = TokenBucket(2.0, now=0.0)
    assert bucket.take(0.0) and bucket.take(0.0)
    assert not bucket.take(0.0)
    assert bucket.delay(0.0) == pytest.approx(0.5)
    assert bucket.take(0.5)
    assert not bucket.take(0.5)
    # A long idle time refills only up to the capacity: no burst beyond one second's worth.
    assert [bucket.take(100.0) for _ in range(3)] == [True, True, False]


def test_a_rate_below_one_a_second_still_lets_one_request_through_then_spaces_them() -> None:
    bucket = TokenBucket(0.5, now=0.0)
    assert bucket.take(0.0)
    assert not bucket.take(1.9)
    assert bucket.take(2.0)


def test_published_shares_are_taken_as_they_are() -> None:
    share = BackendShare(max_parallel=3, rate_per_second=2.5)
    planes = (DataPlaneView(id=ME, shares={"a": share}), DataPlaneView(id="other"))
    assert shares_for(_content(_backend("a", 8, 10), planes=planes), ME) == {"a": share}


def test_without_a_published_share_the_limits_split_evenly_over_the_listed_data_planes() -> None:
    planes = (DataPlaneView(id="x"), DataPlaneView(id="y"))
    # Not listed itself: it counts as one more data plane (three in all).
    shares = shares_for(_content(_backend("a", 4, 10), _backend("b", 1, 1), planes=planes), ME)
    assert shares["a"] == BackendShare(max_parallel=1, rate_per_second=pytest.approx(10 / 3))
    assert shares["b"].max_parallel == 1  # never below one slot
    # Listed, but with no share for this backend yet: split over itself and the one other.
    planes = (DataPlaneView(id=ME, shares={}), DataPlaneView(id="x"))
    assert shares_for(_content(_backend("a", 4, 10), planes=planes), ME)["a"] == BackendShare(
        max_parallel=2, rate_per_second=5.0
    )
    # Alone (or an older control plane that lists nobody): the whole limit.
    assert shares_for(_content(_backend("a", 4, 10)), ME)["a"] == BackendShare(
        max_parallel=4, rate_per_second=10.0
    )


def test_a_request_takes_the_first_candidate_in_its_order_with_room() -> None:
    t = _targets("a", "b")
    gates, _ = _gates(_content(_backend("a", 1), _backend("b", 2)))
    assert gates.admit((t["a"], t["b"]), 0.0) is t["a"]
    assert gates.admit((t["a"], t["b"]), 0.0) is t["b"]
    assert gates.admit((t["a"], t["b"]), 0.0) is t["b"]
    assert gates.admit((t["a"], t["b"]), 0.0) is None
    gates.release("a", 0.0)
    assert gates.admit((t["b"], t["a"]), 0.0) is t["a"]


def test_freed_capacity_goes_to_the_oldest_waiter_that_can_use_it() -> None:
    t = _targets("a", "b")
    gates, _ = _gates(_content(_backend("a", 1), _backend("b", 1)))
    assert gates.admit((t["a"],), 0.0) and gates.admit((t["b"],), 0.0)
    only_a = Waiter((t["a"],), "f", 0.0)
    either = Waiter((t["b"], t["a"]), "f", 0.0)
    only_b = Waiter((t["b"],), "f", 0.0)
    for waiter in (only_a, either, only_b):
        assert gates.enqueue(waiter, 10, 0.0)
    assert gates.queued() == {"a": 2, "b": 2}
    gates.release("b", 0.0)
    assert _granted(gates) == [(either, "b")]  # older than only_b
    gates.release("a", 0.0)
    assert _granted(gates) == [(only_a, "a")]
    gates.release("b", 0.0)
    assert _granted(gates) == [(only_b, "b")]
    assert gates.queued() == {}


def test_a_new_request_never_overtakes_one_waiting_for_a_token() -> None:
    t = _targets("a")
    gates, timers = _gates(_content(_backend("a", parallel=5, rate=1)))
    assert gates.admit((t["a"],), 0.0) is t["a"]
    assert gates.admit((t["a"],), 0.0) is None  # a slot is free, the token is not
    waiter = Waiter((t["a"],), "f", 0.0)
    assert gates.enqueue(waiter, 10, 0.0)
    assert timers.asked == [("a", pytest.approx(1.0, abs=0.01))]
    # The token is back, but the timer has not fired yet: the newcomer still waits its turn.
    assert gates.admit((t["a"],), 1.5) is None
    gates.refill("a", 1.5)
    assert _granted(gates) == [(waiter, "a")]


def test_a_full_queue_refuses_and_a_zero_size_queue_refuses_at_once() -> None:
    t = _targets("a")
    gates, _ = _gates(_content(_backend("a", 1)))
    gates.admit((t["a"],), 0.0)
    assert not gates.enqueue(Waiter((t["a"],), "f", 0.0), 0, 0.0)
    assert gates.enqueue(Waiter((t["a"],), "f", 0.0), 1, 0.0)
    assert not gates.enqueue(Waiter((t["a"],), "f", 0.0), 1, 0.0)
    assert gates.enqueue(Waiter((t["a"],), "other frontend", 0.0), 1, 0.0)  # a queue per frontend
    assert gates.queued() == {"a": 2}


def test_a_waiter_that_leaves_is_gone_from_every_backend_and_its_frontends_count() -> None:
    t = _targets("a", "b")
    gates, _ = _gates(_content(_backend("a", 1), _backend("b", 1)))
    gates.admit((t["a"],), 0.0)
    gates.admit((t["b"],), 0.0)
    leaving = Waiter((t["a"], t["b"]), "f", 0.0)
    assert gates.enqueue(leaving, 1, 0.0)
    gates.leave(leaving)
    assert gates.queued() == {}
    assert gates.enqueue(Waiter((t["a"],), "f", 0.0), 1, 0.0)  # its place in the queue is free
    gates.release("b", 0.0)
    assert _granted(gates) == []  # and nobody was handed a slot on its behalf


def test_a_raised_limit_wakes_waiters_and_a_removed_backend_keeps_its_count_until_released() -> None:
    t = _targets("a")
    gates, _ = _gates(_content(_backend("a", 1)))
    gates.admit((t["a"],), 0.0)
    waiter = Waiter((t["a"],), "f", 0.0)
    gates.enqueue(waiter, 10, 0.0)
    gates.configure(_content(_backend("a", 2)), 0.0)
    assert _granted(gates) == [(waiter, "a")]
    gates.configure(_content(), 1.0)  # gone from the snapshot with two requests still running
    gate = gates.gate("a")
    assert gate is not None and gate.in_flight == 2
    gates.release("a", 1.0)
    gates.release("a", 1.0)
    gates.configure(_content(), 2.0)
    assert gates.gate("a") is None


def test_retry_after_drains_the_longest_queue_at_the_candidates_rate() -> None:
    t = _targets("a", "b")
    gates, _ = _gates(_content(_backend("a", 1, rate=1), _backend("b", 1, rate=1)))
    gates.admit((t["a"],), 0.0)
    gates.admit((t["b"],), 0.0)
    for _ in range(3):
        gates.enqueue(Waiter((t["a"], t["b"]), "f", 0.0), 10, 0.0)
    assert gates.retry_after((t["a"], t["b"])) == 2  # (3 ahead + 1) at 2 a second
    assert gates.retry_after((t["a"],)) == 4


def test_rejections_come_in_each_clients_format_with_retry_after() -> None:
    exc = QueueRejected("server busy", 3)
    status, body, header = exc.response("Ollama")
    assert (status, json.loads(body), header) == (503, {"error": "server busy"}, (b"retry-after", b"3"))
    status, body, header = exc.response("OpenAI")
    error = json.loads(body)["error"]
    assert status == 429 and header == (b"retry-after", b"3")
    assert error["code"] == "rate_limit_exceeded" and error["message"] == "server busy"


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _admission(*backends: BackendView) -> tuple[Admission, _Clock]:
    clock = _Clock()
    admission = Admission(ME, clock=clock)
    admission.refresh(seal(_content(*backends), revision=1, generated_at="2025-01-01T00:00:00Z"))
    return admission, clock


async def test_a_waiting_request_gets_the_slot_released_and_knows_how_long_it_waited() -> None:
    t = _targets("a")
    admission, clock = _admission(_backend("a", 1))
    assert admission.admit((t["a"],)) is t["a"]
    waiting = asyncio.create_task(admission.wait((t["a"],), FrontendView(id="f")))
    await asyncio.sleep(0)  # the task runs up to its wait
    assert admission.queued() == {"a": 1}
    clock.now += 0.25
    admission.release("a")
    assert await waiting == (t["a"], pytest.approx(0.25))


async def test_a_wait_that_expires_is_rejected_and_leaves_the_queue() -> None:
    t = _targets("a")
    admission, _ = _admission(_backend("a", 1))
    admission.admit((t["a"],))
    with pytest.raises(QueueRejected, match="within the 20 ms"):
        await admission.wait((t["a"],), FrontendView(id="f", queue_timeout_ms=20))
    assert admission.queued() == {}


async def test_a_full_queue_is_rejected_at_once() -> None:
    t = _targets("a")
    admission, _ = _admission(_backend("a", 1))
    admission.admit((t["a"],))
    with pytest.raises(QueueRejected, match="queue of frontend 'f' is full"):
        await admission.wait((t["a"],), FrontendView(id="f", queue_size=0))


@pytest.mark.parametrize("granted_first", [False, True])
async def test_a_cancelled_wait_leaves_the_queue_and_gives_back_a_slot_it_was_handed(
    granted_first: bool,
) -> None:
    t = _targets("a")
    admission, _ = _admission(_backend("a", 1))
    admission.admit((t["a"],))
    waiting = asyncio.create_task(admission.wait((t["a"],), FrontendView(id="f")))
    await asyncio.sleep(0)  # the task runs up to its wait
    assert admission.queued() == {"a": 1}
    if granted_first:  # the slot is handed over, but the client leaves before the request resumes
        admission.release("a")
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert admission.queued() == {}
    gate = admission.gates.gate("a")
    assert gate is not None
    assert gate.in_flight == (0 if granted_first else 1)


def _planes(mine: int, other: int) -> tuple[DataPlaneView, ...]:
    return (
        DataPlaneView(id=ME, shares={"a": BackendShare(max_parallel=mine, rate_per_second=100.0)}),
        DataPlaneView(id="peer", shares={"a": BackendShare(max_parallel=other, rate_per_second=100.0)}),
    )


def test_a_raised_share_waits_until_the_other_plane_reports_it_drained_but_a_cut_applies_at_once() -> None:
    t = _targets("a")
    gates, _ = _gates(_content(_backend("a", 4), planes=_planes(2, 2)))
    assert [gates.admit((t["a"],), 0.0) for _ in range(3)] == [t["a"], t["a"], None]
    waiter = Waiter((t["a"],), "f", 0.0)
    gates.enqueue(waiter, 10, 0.0)
    # Revision 2 moves a slot here; the peer may still run two requests under its old share.
    gates.configure(_content(_backend("a", 4), planes=_planes(3, 1)), 0.0, revision=2)
    assert gates.limits == {"a": 2} and _granted(gates) == []
    gates.observe("peer", 1, {"a": 0}, 0.0)  # a report from before it applied revision 2
    assert gates.limits == {"a": 2}
    gates.observe("peer", 2, {"a": 2}, 0.0)  # applied, but still draining
    assert gates.limits == {"a": 2}
    gates.observe("peer", 2, {"a": 1}, 0.0)  # down to its new share: the slot is free
    assert gates.limits == {"a": 3}
    assert _granted(gates) == [(waiter, "a")]
    # The slot moves back: the cut applies at once, the requests running here finish as they are.
    gates.configure(_content(_backend("a", 4), planes=_planes(2, 2)), 0.0, revision=3)
    assert gates.limits == {"a": 2}
    assert gates.admit((t["a"],), 0.0) is None


def test_without_a_listing_or_other_planes_a_raise_applies_at_once() -> None:
    gates, _ = _gates(_content(_backend("a", 2)))
    gates.configure(_content(_backend("a", 5)), 0.0, revision=2)
    assert gates.limits == {"a": 5}
    alone = (DataPlaneView(id=ME, shares={"a": BackendShare(max_parallel=7, rate_per_second=1.0)}),)
    gates.configure(_content(_backend("a", 8), planes=alone), 0.0, revision=3)
    assert gates.limits == {"a": 7}


# 0 means unlimited (RateLimitRequestsThreshold, MaxParallelRequests).


def test_a_backend_without_limits_admits_any_number_at_once_whatever_was_published() -> None:
    t = _targets("a")
    # A stale published share (from when it had limits) must not hold it back.
    stale = (DataPlaneView(id=ME, shares={"a": BackendShare(max_parallel=1, rate_per_second=1.0)}),)
    for planes in ((), stale):
        gates, timers = _gates(_content(_backend("a", parallel=0, rate=0), planes=planes))
        assert all(gates.admit((t["a"],), 0.0) == t["a"] for _ in range(10_000))
        assert timers.asked == [] and gates.gate("a") is not None
        assert gates.gate("a").in_flight == 10_000  # type: ignore[union-attr]


def test_no_parallel_limit_with_a_rate_limit_holds_only_the_rate() -> None:
    t = _targets("a")
    gates, timers = _gates(_content(_backend("a", parallel=0, rate=3)))
    assert [gates.admit((t["a"],), 0.0) is not None for _ in range(4)] == [True, True, True, False]
    waiter = Waiter((t["a"],), "f", 0.0)
    gates.enqueue(waiter, 10, 0.0)
    assert timers.asked and timers.asked[0][0] == "a"  # woken by a token, not by a slot
    gates.refill("a", 0.34)
    assert _granted(gates) == [(waiter, "a")]


def test_no_rate_limit_with_a_parallel_limit_holds_only_the_slots() -> None:
    t = _targets("a")
    # The control plane publishes rate 0 for a backend without a rate limit: no limit, not "no requests".
    share = (DataPlaneView(id=ME, shares={"a": BackendShare(max_parallel=2, rate_per_second=0.0)}),)
    gates, _ = _gates(_content(_backend("a", parallel=2, rate=0), planes=share))
    assert [gates.admit((t["a"],), 0.0) is not None for _ in range(3)] == [True, True, False]
    gates.release("a", 0.0)
    assert gates.admit((t["a"],), 0.0) is not None
    assert gates.admit((t["a"],), 0.0) is None


def test_shares_for_turns_a_zero_limit_into_no_limit() -> None:
    content = _content(_backend("a", 0, 0), _backend("b", parallel=4, rate=0), _backend("c", 0, 6))
    shares = shares_for(content, ME)
    assert shares["a"].max_parallel >= 1 << 40 and shares["a"].rate_per_second == float("inf")
    assert shares["b"].max_parallel == 4 and shares["b"].rate_per_second == float("inf")
    assert shares["c"].max_parallel >= 1 << 40 and shares["c"].rate_per_second == 6.0


def test_lifting_and_setting_a_limit_apply_at_once_and_wake_waiters() -> None:
    t = _targets("a")
    gates, _ = _gates(_content(_backend("a", parallel=1, rate=1000)))
    assert gates.admit((t["a"],), 0.0) == t["a"]
    waiter = Waiter((t["a"],), "f", 0.0)
    gates.enqueue(waiter, 10, 0.0)
    # Lifted: nothing to overlap, so the waiter goes at once even with other planes listed.
    peer = (DataPlaneView(id=ME), DataPlaneView(id="peer"))
    gates.configure(_content(_backend("a", parallel=0, rate=0), planes=peer), 0.0, revision=2)
    assert _granted(gates) == [(waiter, "a")]
    assert gates.admit((t["a"],), 0.0) == t["a"]
    # Set again: a cut applies at once; the three running finish as they are.
    gates.configure(_content(_backend("a", parallel=2, rate=0)), 0.0, revision=3)
    assert gates.limits == {"a": 2} and gates.admit((t["a"],), 0.0) is None
