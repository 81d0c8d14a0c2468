"""Sticky sessions: requests of one conversation go to one backend, on every data plane alike.

Pure: hashing and a bounded table with the clock passed in; no I/O.

The session key is the value of the first of the frontend's sticky headers the client sent. Each
candidate backend gets a weight, a hash of key x backend id (rendezvous, or highest-random-weight,
hashing); the heaviest is the session's home. Every replica computes the same weights from the same
snapshot, so they agree without talking to each other, and when a backend leaves the candidates only
the sessions that lived on it move (to their next-heaviest backend).

A home backend that is full (at this data plane's share of its limit) gives way to the next by weight.
Such a move is remembered locally (``Sessions``) so the conversation stays on the backend it moved to
instead of bouncing back and forth. The memory is per data plane (another replica sends the session
home, which is at worst one extra prompt evaluation), expires after the frontend's
StickySessionExpirationMs of inactivity, ends when the session lands on its home backend again (its
fallback unusable), and is bounded in size (least recently used first out).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

__all__ = [
    "MAX_KEY_LENGTH",
    "SESSIONS_LIMIT",
    "Sessions",
    "StickyTarget",
    "backend_seed",
    "by_weight",
    "key_hash",
    "session_key",
    "short_hash",
    "sticky_order",
]

# Session keys longer than this are cut: enough to be unique, bounded in memory per session.
MAX_KEY_LENGTH = 256
# Moved sessions remembered per pool; the least recently used go first beyond this.
SESSIONS_LIMIT = 10_000

_MASK = (1 << 64) - 1


class StickyTarget(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def sticky_seed(self) -> int: ...


T = TypeVar("T", bound=StickyTarget)


def _hash64(data: bytes) -> int:
    # A stable hash (Python's hash() differs between processes, which would break the agreement).
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def backend_seed(backend_id: str) -> int:
    """The backend's part of every weight; computed once per snapshot."""
    return _hash64(b"backend\0" + backend_id.encode("utf-8", "surrogatepass"))


def key_hash(key: str) -> int:
    return _hash64(b"session\0" + key.encode("utf-8", "surrogatepass"))


def short_hash(key: str) -> str:
    """What the debug header and the dry-run show instead of the session key itself."""
    return f"{key_hash(key):016x}"[:8]


def _mix(z: int) -> int:
    # SplitMix64's finaliser: every input bit affects every output bit, so key ^ seed weights are
    # independent per backend (a plain xor would rank backends the same for many keys).
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def session_key(headers: Iterable[tuple[bytes, bytes]], names: tuple[bytes, ...]) -> str | None:
    """The value of the first header in ``names`` (lower-case) the client sent non-empty, if any."""
    found: dict[bytes, bytes] = {}
    for name, value in headers:
        if name in names and name not in found:
            found[name] = value
    for name in names:
        value = found.get(name, b"").strip()
        if value:
            return value[:MAX_KEY_LENGTH].decode("latin-1")
    return None


def by_weight(candidates: tuple[T, ...], key: str) -> tuple[T, ...]:
    """``candidates`` heaviest first for ``key``: the home backend, then where the session goes next."""
    k = key_hash(key)
    return tuple(sorted(candidates, key=lambda t: _mix(k ^ t.sticky_seed), reverse=True))


@dataclass(slots=True)
class _Moved:
    backend: str
    last_used: float  # seconds, the caller's clock


@dataclass(slots=True)
class Sessions:
    """Sessions that moved off their full home backend, on this data plane: key -> where they went."""

    ttl: float  # seconds of inactivity after which a move is forgotten
    limit: int = SESSIONS_LIMIT
    _moved: OrderedDict[str, _Moved] = field(default_factory=OrderedDict)

    def __len__(self) -> int:
        return len(self._moved)

    def moved_to(self, key: str, now: float) -> str | None:
        """Where ``key`` moved to, if that is remembered and not expired (the memory is not renewed)."""
        moved = self._moved.get(key)
        if moved is None:
            return None
        if now - moved.last_used > self.ttl:
            del self._moved[key]
            return None
        return moved.backend

    def remember(self, key: str, backend: str, now: float) -> None:
        moved = self._moved.get(key)
        if moved is None:
            self._moved[key] = _Moved(backend, now)
            while len(self._moved) > self.limit:
                self._moved.popitem(last=False)
            self._expire(now)
        else:
            moved.backend, moved.last_used = backend, now
            self._moved.move_to_end(key)

    def forget(self, key: str) -> None:
        self._moved.pop(key, None)

    def _expire(self, now: float) -> None:
        # Oldest first (least recently used at the front): stop at the first one still alive.
        while self._moved:
            key, moved = next(iter(self._moved.items()))
            if now - moved.last_used <= self.ttl:
                return
            del self._moved[key]


def sticky_order(
    candidates: tuple[T, ...],
    key: str,
    in_flight: Mapping[str, int],
    limits: Mapping[str, int],
    sessions: Sessions | None,
    now: float,
    *,
    peek: bool = False,
) -> tuple[tuple[T, ...], str]:
    """The candidates for session ``key``, best first, and a word on why: "home", "moved" (the home
    backend is full) or "stayed" (on the backend an earlier move went to).

    Not full ones first, by weight; then the full ones, by weight. ``peek`` (the dry-run) changes no
    memory.
    """
    ranked = by_weight(candidates, key)
    heaviest = ranked[0]

    def full(target: T) -> bool:
        return in_flight.get(target.id, 0) >= max(1, limits.get(target.id, 1))

    order = ranked
    if in_flight:
        free = [t for t in ranked if not full(t)]
        if free and len(free) < len(ranked):
            order = (*free, *(t for t in ranked if full(t)))
    if sessions is None:
        return order, "home" if order[0] is heaviest else "moved"
    moved = sessions.moved_to(key, now)
    if moved is not None and moved != heaviest.id:
        there = next((t for t in order if t.id == moved), None)
        if there is not None and not full(there):
            if not peek:
                sessions.remember(key, moved, now)
            return (there, *(t for t in order if t is not there)), "stayed"
    if order[0] is heaviest:
        if moved is not None and not peek:
            sessions.forget(key)  # back home: the move is over
        return order, "home"
    if not peek:
        sessions.remember(key, order[0].id, now)
    return order, "moved"
