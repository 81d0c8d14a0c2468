"""The pure split of each backend's cluster-wide limits among the live data planes.

Properties are checked over many generated cases (fixed seeds, so a failure can be replayed).
"""

from __future__ import annotations

import random

import pytest

from controlplane.publish.shares import Limits, demand_level, split_shares
from shared.snapshot import BackendShare

Split = dict[str, dict[str, BackendShare]]


def _case(seed: int) -> tuple[dict[str, Limits], dict[str, dict[str, int]]]:
    rng = random.Random(seed)
    backends = [f"b{i}" for i in range(rng.randint(1, 4))]
    limits = {
        b: Limits(rng.choice([1, 2, 3, 4, 5, 7, 8, 16, 33, 100, 1000]), float(rng.choice([1, 3, 10, 250])))
        for b in backends
    }
    planes = [f"dp-{rng.getrandbits(24):06x}" for _ in range(rng.randint(1, 9))]
    demand = {
        p: {b: rng.choice([0, 0, 1, 2, 3, 5, 9, 40, 500]) for b in backends if rng.random() < 0.7}
        for p in planes
    }
    return limits, demand


def _slots(split: Split, backend: str) -> dict[str, int]:
    return {plane: shares[backend].max_parallel for plane, shares in split.items()}


def _millis(split: Split, backend: str) -> dict[str, int]:
    return {plane: round(shares[backend].rate_per_second * 1000) for plane, shares in split.items()}


CASES = range(400)


@pytest.mark.parametrize("seed", [0])
def test_generated_cases_hold_every_property(seed: int) -> None:
    for case in CASES:
        limits, demand = _case(seed * 100_000 + case)
        split = split_shares(limits, demand)
        assert list(split) == sorted(demand), case
        n = len(demand)
        for backend, limit in limits.items():
            slots = _slots(split, backend)
            # Never more than the limit in sum, and no slot left unassigned.
            assert sum(slots.values()) == limit.max_parallel, case
            if limit.max_parallel >= n:
                assert min(slots.values()) >= 1, (case, backend, slots)
            else:
                assert sorted(slots.values()) == [0] * (n - limit.max_parallel) + [1] * limit.max_parallel
            # Rates: never more than the limit in sum, in proportion to the slots.
            millis = _millis(split, backend)
            assert sum(millis.values()) <= limit.rate_per_second * 1000, case
            assert all(m >= 0 for m in millis.values())
            assert all(millis[p] == 0 for p in slots if slots[p] == 0)
            # More (quantised) demand never means fewer slots (one request is covered by anyone's
            # first slot, so 0 and 1 count alike while every plane has one).
            floor = 1 if limit.max_parallel >= n else 0
            level = {p: max(demand_level(demand[p].get(backend, 0)) - floor, 0) for p in demand}
            for a in demand:
                for b in demand:
                    if level[a] > level[b]:
                        assert slots[a] >= slots[b], (case, backend, level, slots)
        for shares in split.values():
            assert list(shares) == sorted(limits)


def test_deterministic_whatever_the_order_of_the_inputs() -> None:
    for case in range(100):
        limits, demand = _case(case)
        shuffled = list(demand.items())
        random.Random(case).shuffle(shuffled)
        again = {p: dict(reversed(list(d.items()))) for p, d in shuffled}
        assert split_shares(limits, demand) == split_shares(dict(reversed(list(limits.items()))), again)


def test_output_fed_back_as_previous_is_a_fixed_point() -> None:
    for case in range(200):
        limits, demand = _case(case)
        first = split_shares(limits, demand)
        assert split_shares(limits, demand, first) == first, case


def test_idle_planes_get_an_even_split() -> None:
    split = split_shares({"b": Limits(10, 7.0)}, {"dp1": {}, "dp2": {}, "dp3": {}})
    assert sorted(_slots(split, "b").values()) == [3, 3, 4]
    assert sorted(_millis(split, "b").values()) == [2100, 2100, 2800]
    even = split_shares({"b": Limits(8, 8.0)}, {"dp1": {}, "dp2": {"b": 0}})
    assert _slots(even, "b") == {"dp1": 4, "dp2": 4}
    assert even["dp1"]["b"] == BackendShare(max_parallel=4, rate_per_second=4.0)


def test_demand_shifts_the_split_but_every_plane_keeps_a_slot() -> None:
    limits = {"b": Limits(10, 10.0)}
    assert _slots(split_shares(limits, {"busy": {"b": 40}, "idle": {}}), "b") == {"busy": 9, "idle": 1}
    # Demand that fits is met in full, and the spare slots are spread evenly.
    assert _slots(split_shares(limits, {"x": {"b": 3}, "y": {"b": 1}}), "b") == {"x": 6, "y": 4}
    # Demand that does not fit is served in proportion.
    split = _slots(split_shares(limits, {"x": {"b": 500}, "y": {"b": 500}, "z": {"b": 1}}), "b")
    assert split["z"] == 1 and abs(split["x"] - split["y"]) <= 1


def test_a_limit_below_the_number_of_planes_goes_to_the_busiest() -> None:
    demand = {"a": {}, "b": {"x": 2}, "c": {}, "d": {"x": 9}}
    assert _slots(split_shares({"x": Limits(2, 4.0)}, demand), "x") == {"a": 0, "b": 1, "c": 0, "d": 1}
    # Idle: which plane gets the single slot differs between backends (a hash, not the plane name).
    idle = {f"dp{i}": {} for i in range(6)}
    limits = {f"b{i}": Limits(1, 1.0) for i in range(12)}
    winners = {next(p for p, n in _slots(split_shares(limits, idle), b).items() if n) for b in limits}
    assert len(winners) > 1


def test_small_demand_changes_keep_the_published_shares() -> None:
    limits = {"b": Limits(64, 64.0)}
    before = split_shares(limits, {"dp1": {"b": 20}, "dp2": {"b": 20}})
    # 20 -> 23 stays within one demand level: the same split.
    assert split_shares(limits, {"dp1": {"b": 23}, "dp2": {"b": 20}}, before) == before
    # A level change that moves the ideal split by at most 64 // 8 slots keeps the published one...
    nudged = {"dp1": {"b": 30}, "dp2": {"b": 20}}
    assert split_shares(limits, nudged, before) == before
    assert split_shares(limits, nudged) != before
    # ...a large one does not.
    moved = split_shares(limits, {"dp1": {"b": 500}, "dp2": {}}, before)
    assert _slots(moved, "b") == {"dp1": 63, "dp2": 1}


def test_previous_shares_are_dropped_when_planes_or_limits_change() -> None:
    limits = {"b": Limits(64, 64.0)}
    two = split_shares(limits, {"dp1": {}, "dp2": {}})
    # A third plane appears: rebalanced at once.
    three = split_shares(limits, {"dp1": {}, "dp2": {}, "dp3": {}}, two)
    assert sorted(_slots(three, "b").values()) == [21, 21, 22]
    # One leaves: its slots go to the others.
    assert _slots(split_shares(limits, {"dp1": {}, "dp2": {}}, three), "b") == {"dp1": 32, "dp2": 32}
    # The limit drops: the old shares would exceed it.
    lower = split_shares({"b": Limits(60, 64.0)}, {"dp1": {}, "dp2": {}}, two)
    assert _slots(lower, "b") == {"dp1": 30, "dp2": 30}
    # The rate changes: the kept slots get rates from the new limit.
    faster = split_shares({"b": Limits(64, 128.0)}, {"dp1": {}, "dp2": {}}, two)
    assert faster["dp1"]["b"] == BackendShare(max_parallel=32, rate_per_second=64.0)
    # A backend the previous shares did not know.
    added = split_shares({**limits, "c": Limits(3, 3.0)}, {"dp1": {}, "dp2": {}}, two)
    assert sorted(_slots(added, "c").values()) == [1, 2]


def test_no_planes_or_no_backends() -> None:
    assert split_shares({"b": Limits(4, 1.0)}, {}) == {}
    assert split_shares({}, {"dp1": {"b": 3}}) == {"dp1": {}}


@pytest.mark.parametrize(
    ("count", "level"),
    [(-1, 0), (0, 0), (1, 1), (3, 3), (4, 4), (5, 6), (6, 6), (7, 8), (8, 8), (9, 12), (13, 16), (25, 32)],
)
def test_demand_levels(count: int, level: int) -> None:
    assert demand_level(count) == level


def test_noisy_steady_load_does_not_churn() -> None:
    """A hundred reports of a steady load with ±20% noise, each split fed the last published one:
    the split changes at most a couple of times (each change would be a new snapshot revision)."""
    rng = random.Random(7)
    limits = {"b": Limits(64, 32.0), "c": Limits(6, 6.0)}
    published = split_shares(limits, {"dp1": {"b": 40, "c": 3}, "dp2": {"b": 20, "c": 3}})
    changes = 0
    for _ in range(100):
        demand = {
            "dp1": {"b": round(40 * rng.uniform(0.8, 1.2)), "c": rng.choice([2, 3])},
            "dp2": {"b": round(20 * rng.uniform(0.8, 1.2)), "c": rng.choice([2, 3])},
        }
        split = split_shares(limits, demand, published)
        changes += split != published
        published = split
    assert changes <= 2


def test_a_small_limit_still_moves_to_a_busy_plane() -> None:
    limits = {"b": Limits(4, 4.0)}
    even = split_shares(limits, {"busy": {}, "idle": {}})
    assert _slots(even, "b") == {"busy": 2, "idle": 2}
    # One slot off the ideal split is tolerated only while every plane's demand is still met.
    assert _slots(split_shares(limits, {"busy": {"b": 10}, "idle": {}}, even), "b") == {"busy": 3, "idle": 1}
    assert split_shares(limits, {"busy": {"b": 2}, "idle": {}}, even) == even


def test_kept_previous_shares_still_hold_every_property() -> None:
    kept = 0
    for case in range(300):
        limits, demand = _case(case)
        # Earlier shares of the same planes under some other load (of another generated case).
        loads = list(_case(case + 10_000)[1].values())
        before = split_shares(limits, {p: loads[i % len(loads)] for i, p in enumerate(demand)})
        split = split_shares(limits, demand, before)
        kept += any(
            _slots(split, b) == _slots(before, b) != _slots(split_shares(limits, demand), b) for b in limits
        )
        n = len(demand)
        for backend, limit in limits.items():
            slots = _slots(split, backend)
            assert sum(slots.values()) == limit.max_parallel, case
            if limit.max_parallel >= n:
                assert min(slots.values()) >= 1, case
            assert sum(_millis(split, backend).values()) <= limit.rate_per_second * 1000
    assert kept > 10  # the cases do exercise keeping earlier shares


def test_even_overload_on_a_small_limit_keeps_the_split() -> None:
    """Both planes queue more than the limit: which one queues a little more must not flip the split."""
    rng = random.Random(3)
    limits = {"b": Limits(6, 6.0)}
    published = split_shares(limits, {"dp1": {}, "dp2": {}})
    for _ in range(50):
        demand = {"dp1": {"b": rng.randint(10, 60)}, "dp2": {"b": rng.randint(10, 60)}}
        assert split_shares(limits, demand, published) == published
    # Without the published split, such loads are split unevenly now and then.
    assert any(
        _slots(split_shares(limits, {"dp1": {"b": a}, "dp2": {"b": b}}), "b") != {"dp1": 3, "dp2": 3}
        for a in range(10, 61)
        for b in range(10, 61)
    )


def test_a_draining_plane_keeps_only_what_it_still_runs() -> None:
    limits = {"b": Limits(12, 6.0)}
    even = split_shares(limits, {"dp1": {}, "dp2": {}})
    assert _slots(even, "b") == {"dp1": 6, "dp2": 6}
    # dp2 got SIGTERM with 3 requests running: the rest of its share goes to dp1 at once.
    leaving = split_shares(limits, {"dp1": {}, "dp2": {"b": 3}}, even, draining={"dp2"})
    assert _slots(leaving, "b") == {"dp1": 9, "dp2": 3}
    assert _millis(leaving, "b") == {"dp1": 4500, "dp2": 1500}
    # Exact demand, not its level: 5 running keep 5 slots (a staying plane's level would be 6).
    assert _slots(split_shares(limits, {"dp1": {}, "dp2": {"b": 5}}, draining={"dp2"}), "b") == {
        "dp1": 7,
        "dp2": 5,
    }
    # Its requests done: nothing left for it.
    done = split_shares(limits, {"dp1": {"b": 2}, "dp2": {}}, leaving, draining={"dp2"})
    assert done["dp2"]["b"] == BackendShare(max_parallel=0, rate_per_second=0.0)
    assert _slots(done, "b") == {"dp1": 12, "dp2": 0}
    # More running than the others can spare: every staying plane keeps one slot.
    crowded = split_shares(limits, {"a": {}, "c": {}, "d": {"b": 40}}, draining={"d"})
    assert _slots(crowded, "b") == {"a": 1, "c": 1, "d": 10}
    # Everyone drains: nobody to give the slots to, so they split as usual.
    assert split_shares(limits, {"dp1": {}, "dp2": {}}, draining={"dp1", "dp2"}) == even


def test_generated_cases_with_draining_planes_hold_the_limit() -> None:
    for case in range(300):
        limits, demand = _case(case)
        rng = random.Random(case)
        draining = {p for p in demand if rng.random() < 0.4}
        split = split_shares(limits, demand, draining=draining)
        staying = [p for p in demand if p not in draining]
        for backend, limit in limits.items():
            slots = _slots(split, backend)
            assert sum(slots.values()) == limit.max_parallel, case
            assert sum(_millis(split, backend).values()) <= limit.rate_per_second * 1000, case
            if not staying:
                continue
            held = sum(slots[p] for p in draining)
            for p in draining:  # never more than what it runs
                assert slots[p] <= demand[p].get(backend, 0), (case, backend, slots)
            if limit.max_parallel >= len(staying):
                assert min(slots[p] for p in staying) >= 1, (case, backend, slots)
            wanted = sum(demand[p].get(backend, 0) for p in draining)
            if wanted <= limit.max_parallel - len(staying):  # room for all it runs: it keeps all
                assert held == wanted, (case, backend, slots)
        # Fed back as previous: a fixed point, as without draining planes.
        assert split_shares(limits, demand, split, draining=draining) == split, case


def test_a_memo_gives_the_same_shares_as_a_fresh_split_whatever_changed() -> None:
    from controlplane.publish.shares import ShareMemo

    limits = {f"b{i}": Limits(4 + i % 3, 10.0 + i) for i in range(30)}
    planes = {"dp-a": {}, "dp-b": {}, "dp-c": {}}
    memo = ShareMemo()
    steps = [
        (limits, planes, None, frozenset()),
        (limits, planes, None, frozenset()),  # the same again: the whole result is reused
        (limits | {"b3": Limits(9, 1.0)}, planes, None, frozenset()),  # one backend changed
        (limits, {**planes, "dp-a": {"b1": 5, "b2": 7}}, None, frozenset()),  # new load
        (limits, planes, None, frozenset({"dp-b"})),  # a plane drains
        (limits, {"dp-a": {}, "dp-c": {}}, None, frozenset()),  # a plane left
    ]
    previous = None
    for limit, demand, _, draining in steps:
        fresh = split_shares(limit, demand, previous, draining)
        memoised = split_shares(limit, demand, previous, draining, memo)
        assert memoised == fresh
        previous = fresh
    # A caller changing its own mappings afterwards does not fool the memo.
    load = {"dp-a": {}, "dp-b": {}}
    first = split_shares(limits, load, None, frozenset(), memo)
    load["dp-a"]["b0"] = 12
    assert split_shares(limits, load, None, frozenset(), memo) == split_shares(limits, load)
    assert first != split_shares(limits, load)


def test_zero_means_unlimited_no_share_or_a_rate_split_by_demand() -> None:
    limits = {"free": Limits(0, 0.0), "rate": Limits(0, 9.0), "slots": Limits(6, 0.0)}
    demand = {"dp-a": {"rate": 40}, "dp-b": {}, "dp-c": {}}
    split = split_shares(limits, demand)
    # Unlimited both ways: no share to publish (data planes need none).
    assert all("free" not in shares for shares in split.values())
    # A rate without a parallel limit is split whole, never above it, and follows demand.
    millis = _millis(split, "rate")
    assert sum(millis.values()) <= 9000 and sum(millis.values()) >= 8990
    assert millis["dp-a"] > millis["dp-b"] > 0 and millis["dp-b"] == millis["dp-c"]
    # A parallel limit without a rate: slots as usual, rate 0 (which data planes read as none).
    assert sum(_slots(split, "slots").values()) == 6
    assert all(shares["slots"].rate_per_second == 0 for shares in split.values())
    # Fed back, a rate-only split is kept (hysteresis works on its weights).
    assert split_shares(limits, demand, previous=split) == split
