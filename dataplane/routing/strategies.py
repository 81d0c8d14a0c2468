"""How a pool orders its candidate backends for one request: the load-balancing strategies.

Pure: functions over candidate tuples and load figures, no I/O, no clock. Each returns every
candidate, best first: the first is the choice, the rest the failover sequence. Ties always go by the
rotation the caller passes in (candidates already rotated by the pool's turn), so equal backends share
the traffic in turn instead of the first one in the list getting it all.

Load is "in flight relative to limit": requests this data plane has on a backend divided by this data
plane's share of the backend's MaxParallelRequests. A backend is *full* at or over its share. A backend
without a parallel limit (MaxParallelRequests 0) has ``UNLIMITED`` as its limit: never full, and its load
is its in-flight count over a number so large that it sorts before any limited backend's with requests.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from shared.models import model_key
from shared.snapshot import LoadBalancing, LoadedModel

__all__ = [
    "COLD",
    "UNLIMITED",
    "Decision",
    "HasId",
    "least_connections",
    "model_aware",
    "rotated",
    "warm_index",
]


class HasId(Protocol):
    @property
    def id(self) -> str: ...


T = TypeVar("T", bound=HasId)

COLD: frozenset[str] = frozenset()
# The limit of a backend without one (MaxParallelRequests 0): more requests than any data plane holds.
UNLIMITED = 1 << 40
_TIER = 1e9  # above any in-flight/limit ratio: keeps ModelAware's tiers apart in one float key


@dataclass(slots=True, eq=False)  # not frozen: a frozen dataclass costs ~1 µs more per request
class Decision(Generic[T]):
    """A pool's ordering of the candidates for one request, and what an explanation needs of it."""

    order: tuple[T, ...]  # every candidate, best first
    strategy: LoadBalancing
    warm: frozenset[str] = COLD  # ModelAware: ids of candidates with the model loaded
    sticky_key: str | None = None  # set when the order comes from the session key, not the strategy
    sticky: str = ""  # "home", "moved" (home full) or "stayed" (where an earlier move went)


def warm_index(loaded: Iterable[tuple[str, tuple[LoadedModel, ...]]]) -> dict[str, frozenset[str]]:
    """Model key -> ids of the backends that have that model loaded, from (id, /api/ps models)."""
    warm: dict[str, set[str]] = {}
    for backend_id, models in loaded:
        for model in models:
            warm.setdefault(model_key(model.name), set()).add(backend_id)
    return {key: frozenset(ids) for key, ids in warm.items()}


def rotated(candidates: tuple[T, ...], start: int) -> tuple[T, ...]:
    """``candidates`` starting at position ``start`` (modulo their number), wrapping around."""
    n = len(candidates)
    if n < 2:
        return candidates
    i = start % n
    return candidates[i:] + candidates[:i] if i else candidates


def least_connections(
    candidates: tuple[T, ...], in_flight: Mapping[str, int], limits: Mapping[str, int]
) -> tuple[T, ...]:
    """Fewest requests in flight relative to limit first; ``candidates`` is in rotation order.

    Python's sort is stable, so ties keep the rotation.
    """
    if not in_flight or len(candidates) < 2:
        return candidates  # nothing in flight anywhere: pure rotation, no sort
    return tuple(sorted(candidates, key=lambda t: in_flight.get(t.id, 0) / (limits.get(t.id) or 1)))


def model_aware(
    candidates: tuple[T, ...],
    in_flight: Mapping[str, int],
    limits: Mapping[str, int],
    warm: Collection[str],
) -> tuple[T, ...]:
    """Backends that have the model loaded (ids in ``warm``) first, unless they are full.

    Tiers, each least-loaded first: warm with a free slot; cold with a free slot (the model has to be
    loaded there, which is slow, but waiting for a full warm backend is slower); then the full ones,
    warm before cold. Without any warm backend this is ``least_connections``.
    """
    if len(candidates) < 2:
        return candidates
    if not warm:
        return least_connections(candidates, in_flight, limits)

    def key(target: T) -> float:
        backend = target.id
        used = in_flight.get(backend, 0)
        limit = limits.get(backend) or 1
        if used < limit:
            tier = 0.0 if backend in warm else _TIER
        else:
            tier = 2 * _TIER if backend in warm else 3 * _TIER
        return tier + used / limit  # one float: cheaper to sort by than a tuple

    return tuple(sorted(candidates, key=key))
