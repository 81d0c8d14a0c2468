"""PURE: split each API key's cluster-wide request rate among the live data planes.

A key's RateLimitRequestsPerSecond holds for all data planes together; each enforces its part with a
token bucket. The parts are multiples of 0.001 request/s, rounded down, so they never add up to more
than the limit. Each plane keeps a floor of a quarter of an even split, so an idle plane that starts
to see the key is not shut out until the next snapshot; the rest follows demand (the key's requests
per second on that plane, accepted and refused, from its reports, quantised like the backends'
demand): in proportion when some plane has demand, evenly when none has. A draining plane (stopping;
see ``controlplane.publish.shares``) keeps only the floor: the rest goes to the planes that stay.

Stability: the previous parts (those of the stored snapshot) are kept while they are for the same
planes and limit and each is within an eighth of the limit of the new one, so small changes in
demand do not make a new snapshot revision every second. Same inputs, same output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set

from controlplane.publish.shares import RATE_STEPS, demand_level, tiebreak

__all__ = ["split_key_rates"]


def _split(
    key: str, steps: int, planes: Sequence[str], demand: Sequence[int], staying: Sequence[bool]
) -> list[int]:
    """Integer steps per plane (in ``planes`` order) summing to ``steps``; beyond the floor, planes
    that are not ``staying`` get nothing."""
    n = len(planes)
    floor = steps // (4 * n)
    rest = steps - floor * n
    weights = [d if stays else 0 for d, stays in zip(demand, staying, strict=True)]
    total = sum(weights)
    if not total:
        weights = [1 if stays else 0 for stays in staying]
        total = sum(weights)
    parts = [floor + rest * w // total for w in weights]
    remainders = [rest * w % total for w in weights]
    left = steps - sum(parts)
    order = sorted(range(n), key=lambda i: (not staying[i], -remainders[i], tiebreak(key, planes[i])))
    for i in order[:left]:
        parts[i] += 1
    return parts


def _kept(previous: Mapping[str, Mapping[str, float]], key: str, planes: Sequence[str]) -> list[int] | None:
    if set(previous) != set(planes):
        return None
    found = [previous[p].get(key) for p in planes]
    if any(rate is None or rate < 0 for rate in found):
        return None
    return [round(rate * RATE_STEPS) for rate in found if rate is not None]


def split_key_rates(
    limits: Mapping[str, float],
    demand: Mapping[str, Mapping[str, int]],
    previous: Mapping[str, Mapping[str, float]] | None = None,
    draining: Set[str] = frozenset(),
) -> dict[str, dict[str, float]]:
    """Data plane id -> key id -> its part of the key's requests per second, both in sorted order.

    ``limits``: key id -> its cluster-wide rate (a key without a limit, 0, gets no parts). ``demand``: every
    live data plane (the keys) with the key's requests per second there. ``previous``: the parts
    published before, kept while still close (see the module doc). ``draining``: planes that are
    stopping (they keep only the floor).
    """
    planes = sorted(demand)
    result: dict[str, dict[str, float]] = {p: {} for p in planes}
    if not planes:
        return result
    staying = [p not in draining for p in planes]
    if not any(staying):  # everyone drains: split as if none did
        staying = [True] * len(planes)
    for key in sorted(limits):
        steps = int(limits[key] * RATE_STEPS)
        if steps <= 0:
            continue
        levels = [demand_level(demand[p].get(key, 0)) for p in planes]
        parts = _split(key, steps, planes, levels, staying)
        before = _kept(previous, key, planes) if previous else None
        if (
            before is not None
            and sum(before) <= steps
            and all(abs(b - p) <= steps // 8 for b, p in zip(before, parts, strict=True))
        ):
            parts = before
        for plane, part in zip(planes, parts, strict=True):
            result[plane][key] = part / RATE_STEPS
    return result
