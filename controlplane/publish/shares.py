"""PURE: split each backend's cluster-wide limits among the live data planes.

A backend's MaxParallelRequests (concurrent requests) and RateLimitRequestsThreshold (requests per
second) hold for all data planes together. Each live data plane gets a ``BackendShare`` per backend:

- ``max_parallel``: integers summing to exactly the limit (never more). While the limit is at least the
  number of planes, every plane keeps at least one slot so none starves; below that, the busiest planes
  get one slot each (idle ties broken by a hash of backend and plane, so different backends favour
  different planes).
- The rest follows demand (a plane's in-flight + queued requests for that backend, from its report):
  when the total demand fits, every plane gets its demand and the spare slots are spread evenly (idle
  planes: an even split); when it does not, slots go in proportion to demand.
- ``rate_per_second``: the rate limit split in proportion to the slots, rounded down to 0.001 so the
  rates never sum to more than the limit.
- A **draining** plane (its report says it is stopping: it takes no new connections and finishes what
  it runs) is leaving: it keeps only its exact demand (in flight + queued, never more than the others
  leave: each staying plane keeps one slot while the limit allows), and the rest is split among the
  staying planes as above. So its slots go to the others at once and the sum stays the limit. When
  every plane drains, there is nobody to hand the slots to: they split as if none did.
- **0 means unlimited.** A backend with neither limit gets no share at all (data planes need none). One
  with a rate but no parallel limit has its rate split as if it had ``RATE_WEIGHT_SLOTS`` slots per
  plane (so the rate follows demand, with the same rules and hysteresis); those weights are published
  in ``max_parallel``, which data planes ignore for such a backend. One with a parallel limit but no
  rate gets ``rate_per_second`` 0, which data planes ignore likewise.

Stability: demand is quantised (1, 2, 3, 4, 6, 8, 12, 16, …) before use, and ``previous`` shares (the
ones in the stored snapshot) are kept while they are valid for the same planes and limit and within
limit // 8 slots of the new split (or one slot, unless a plane is short of its demand while another
has slots it does not use), so that small load changes do not make a new snapshot revision every
second, and racing control-plane replicas converge on the stored shares. Same inputs, same output.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass

from shared.snapshot import BackendShare

__all__ = [
    "RATE_STEPS",
    "RATE_WEIGHT_SLOTS",
    "Limits",
    "ShareMemo",
    "demand_level",
    "split_shares",
    "tiebreak",
]

RATE_STEPS = 1000  # rates are multiples of 1/1000 request per second
# A backend limited in rate only: its rate is split in proportion to this many weight slots per plane.
RATE_WEIGHT_SLOTS = 16


@dataclass(frozen=True, slots=True)
class Limits:
    """One backend's cluster-wide limits."""

    max_parallel: int  # concurrent requests; 0: unlimited
    rate_per_second: float  # requests started per second; 0: unlimited


def demand_level(count: int) -> int:
    """``count`` rounded up to the next level of 0, 1, 2, 3, 4, 6, 8, 12, 16, 24, …"""
    if count <= 4:
        return max(count, 0)
    low = 1 << (count.bit_length() - 1)  # low <= count < 2 * low
    if count == low:
        return low
    return low + low // 2 if count <= low + low // 2 else 2 * low


def tiebreak(item: str, plane: str) -> bytes:
    """A sort key stable across processes (unlike hash()): which plane gets an odd slot or step, per
    backend (or API key)."""
    return hashlib.blake2b(f"{item}\0{plane}".encode(), digest_size=8).digest()


def _split_slots(backend: str, limit: int, planes: Sequence[str], demand: Sequence[int]) -> list[int]:
    """Integer slots per plane (in ``planes`` order) summing to ``max(limit, 0)``."""
    n = len(planes)
    if n == 0:
        return []
    if limit < n:
        ranked = sorted(range(n), key=lambda i: (-demand[i], tiebreak(backend, planes[i])))
        chosen = set(ranked[: max(limit, 0)])
        return [1 if i in chosen else 0 for i in range(n)]
    rest = limit - n  # after one slot each
    want = [max(d - 1, 0) for d in demand]  # the first slot already covers one request
    total = sum(want)
    # Exact targets as an integer floor plus a remainder over a denominator common to all planes.
    if total <= rest:
        spare = rest - total
        floors = [w + spare // n for w in want]
        remainders = [spare % n] * n
    else:
        floors = [rest * w // total for w in want]
        remainders = [rest * w % total for w in want]
    left = rest - sum(floors)
    order = sorted(range(n), key=lambda i: (-remainders[i], tiebreak(backend, planes[i])))
    extra = set(order[:left])
    return [1 + floors[i] + (1 if i in extra else 0) for i in range(n)]


def _keeps(previous: list[int] | None, target: list[int], limit: int, demand: Sequence[int]) -> bool:
    """Whether the previous slots are still good enough to keep (hysteresis).

    Kept: within limit // 8 slots of the target each; or within one slot, unless that leaves a plane
    short of its demand (and its target) while another holds slots beyond both its demand and its
    target. So small limits do not flap between two equally good splits (e.g. under even overload),
    yet a busy plane still takes the slots an idle one does not use.
    """
    if previous is None or sum(previous) != sum(target):
        return False
    if len(target) <= limit and min(previous) < 1:
        return False
    rows = list(zip(previous, target, demand, strict=True))
    if all(abs(p - t) <= limit // 8 for p, t, _ in rows):
        return True
    if any(abs(p - t) > 1 for p, t, _ in rows):
        return False
    short = any(p < min(t, d) for p, t, d in rows)
    spare = any(p > max(t, d) for p, t, d in rows)
    return not (short and spare)


def _previous_slots(
    previous: Mapping[str, Mapping[str, BackendShare]], backend: str, planes: Sequence[str]
) -> list[int] | None:
    """The previous slots of ``backend`` per plane; the caller checked that ``previous`` has the same
    planes."""
    found = [previous[p].get(backend) for p in planes]
    if any(share is None or share.max_parallel < 0 for share in found):
        return None
    return [share.max_parallel for share in found if share is not None]


def _held_slots(limit: int, staying: int, demand: Sequence[int]) -> list[int]:
    """The slots of the draining planes (in order): each its exact demand, as far as the limit goes
    once every staying plane has one slot."""
    room = max(limit, 0) - min(max(limit, 0), staying)
    held = []
    for wanted in demand:
        take = min(max(wanted, 0), room)
        held.append(take)
        room -= take
    return held


class ShareMemo:
    """The shares of each backend from the last split, by everything they depend on, so that a split
    in which most backends' inputs did not change (the usual case) computes only the others."""

    def __init__(self) -> None:
        self.entries: dict[tuple[object, ...], tuple[BackendShare, ...]] = {}
        # The inputs and the result of the last split: the same inputs again (an admin write that
        # touches no limit, a health change, no new load) give the same result without a loop.
        self.last: tuple[object, ...] | None = None
        self.result: dict[str, dict[str, BackendShare]] = {}


def split_shares(
    limits: Mapping[str, Limits],
    demand: Mapping[str, Mapping[str, int]],
    previous: Mapping[str, Mapping[str, BackendShare]] | None = None,
    draining: Set[str] = frozenset(),
    memo: ShareMemo | None = None,
) -> dict[str, dict[str, BackendShare]]:
    """Data plane id -> backend id -> its share, both in sorted order.

    ``demand``: every live data plane (the keys) with its in-flight + queued requests per backend.
    ``previous``: the shares published before, kept when still close (see the module doc).
    ``draining``: the live planes that are stopping; they keep only their demand (see the module doc).
    ``memo``: the results of the last split, reused where a backend's inputs are the same.
    """
    # Copies: a caller may change its mappings later, and the memo must hold what this split saw.
    inputs = (
        dict(limits),
        {plane: dict(load) for plane, load in demand.items()},
        {plane: dict(shares) for plane, shares in previous.items()} if previous is not None else None,
        frozenset(draining),
    )
    if memo is not None and memo.last == inputs:
        return {plane: dict(shares) for plane, shares in memo.result.items()}
    planes = sorted(demand)
    result: dict[str, dict[str, BackendShare]] = {p: {} for p in planes}
    if not planes:
        return result
    leaving = [p for p in planes if p in draining]
    staying = [p for p in planes if p not in draining]
    if not staying:  # everyone drains: nobody to hand the slots to
        leaving, staying = [], planes
    if previous is not None and set(previous) != set(planes):
        previous = None  # other planes: nothing to keep
    known = memo.entries if memo is not None else {}
    seen: dict[tuple[object, ...], tuple[BackendShare, ...]] = {}
    who = (tuple(planes), tuple(leaving))
    for backend in sorted(limits):
        limit = limits[backend]
        if limit.max_parallel <= 0:
            if limit.rate_per_second <= 0:
                continue  # unlimited both ways: nothing to split
            limit = Limits(RATE_WEIGHT_SLOTS * len(planes), limit.rate_per_second)
        leaving_demand = tuple(demand[p].get(backend, 0) for p in leaving)
        levels = tuple(demand_level(demand[p].get(backend, 0)) for p in staying)
        before = _previous_slots(previous, backend, planes) if previous else None
        key = (backend, limit, who, leaving_demand, levels, before and tuple(before))
        shares = known.get(key)
        if shares is None:
            shares = _shares(backend, limit, planes, staying, leaving, leaving_demand, levels, before)
        seen[key] = shares
        for plane, share in zip(planes, shares, strict=True):
            result[plane][backend] = share
    if memo is not None:
        memo.entries = seen  # only this split's: the memo never outgrows the backends
        memo.last, memo.result = inputs, result
    return {plane: dict(shares) for plane, shares in result.items()} if memo is not None else result


def _shares(
    backend: str,
    limit: Limits,
    planes: Sequence[str],
    staying: Sequence[str],
    leaving: Sequence[str],
    leaving_demand: Sequence[int],
    levels: Sequence[int],
    before: list[int] | None,
) -> tuple[BackendShare, ...]:
    """One backend's share per plane (in ``planes`` order)."""
    held = _held_slots(limit.max_parallel, len(staying), leaving_demand)
    rest = max(limit.max_parallel, 0) - sum(held)
    slots = _split_slots(backend, rest, staying, levels)
    if before is not None:
        kept = dict(zip(planes, before, strict=True))
        before_staying = [kept[p] for p in staying]
        if [kept[p] for p in leaving] == held and _keeps(before_staying, slots, rest, levels):
            slots = before_staying
    counts = dict(zip(staying, slots, strict=True)) | dict(zip(leaving, held, strict=True))
    total = sum(counts.values())
    rate_steps = max(int(limit.rate_per_second * RATE_STEPS), 0)
    return tuple(
        BackendShare(
            max_parallel=counts[plane],
            rate_per_second=(rate_steps * counts[plane] // total if total else 0) / RATE_STEPS,
        )
        for plane in planes
    )
