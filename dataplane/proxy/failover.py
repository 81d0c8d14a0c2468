"""Failover: which backends one request may still go to, and how many attempts it has left.

Pure, over plain data. The strategy's order becomes the request's candidates (``candidates``): the
backends whose circuit breaker lets a request through, or the first pick when none does. A backend
that failed before its answer reached the client is passed over from then on; a request makes at most
``MAX_ATTEMPTS`` attempts (the first one included), or one when its frontend allows no retries.

Asking a breaker consumes an ejected backend's one trial request, so the trials of the candidates the
first attempt did not pick are given back (``spare_trials``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from dataplane.limits.breaker import Breakers

__all__ = ["MAX_ATTEMPTS", "Failover", "candidates", "spare_trials"]

# Attempts per request when backends fail before answering (the first one included).
MAX_ATTEMPTS = 3


class Backend(Protocol):
    @property
    def id(self) -> str: ...


B = TypeVar("B", bound=Backend)


def candidates(order: Iterable[B], breakers: Breakers) -> tuple[B, ...]:
    """The backends of ``order`` whose breakers let a request through; the first pick if none does,
    rather than refusing the request outright (passive health can be wrong, e.g. after a blip)."""
    ordered = tuple(order)
    if not breakers.active:  # nothing ejected: nobody needs asking
        return ordered
    admitted = tuple(_admitted(ordered, breakers))
    return admitted or ordered[:1]


def _admitted(ordered: tuple[B, ...], breakers: Breakers) -> Iterator[B]:
    for backend in ordered:
        if breakers.allows(backend.id):
            yield backend


def spare_trials(breakers: Breakers, candidates: Iterable[B], used: B | None) -> None:
    """Give back the trial requests ``candidates`` took for the backends other than ``used``."""
    if breakers.active:
        ejected = breakers.ejected()
        for backend in candidates:
            if backend is not used and backend.id in ejected:
                breakers.abandoned(backend.id)


@dataclass(slots=True)
class Failover(Generic[B]):
    """One request's candidates, those that failed, and the attempts it has left."""

    candidates: tuple[B, ...]  # in the strategy's order, ejected backends left out
    attempts: int = 1  # attempts left
    tried: tuple[B, ...] = ()  # candidates that failed: passed over from now on

    @classmethod
    def plan(cls, candidates: tuple[B, ...], *, allow_retries: bool) -> Failover[B]:
        return cls(candidates, MAX_ATTEMPTS if allow_retries else 1)

    def remaining(self) -> tuple[B, ...]:
        """The candidates the next attempt may go to; none when no attempt is left."""
        if self.attempts <= 0:
            return ()
        if not self.tried:
            return self.candidates
        return tuple(b for b in self.candidates if b not in self.tried)

    def started(self) -> None:
        """An attempt goes out (to one of ``remaining()``)."""
        self.attempts -= 1

    def failed(self, backend: B) -> None:
        """``backend`` failed before its answer reached the client: pass it over from now on."""
        self.tried += (backend,)

    def may_retry(self) -> bool:
        """Were the attempt under way to fail, would another one follow (an attempt left, and a
        candidate not tried yet besides the current one)?"""
        return self.attempts > 0 and len(self.tried) + 1 < len(self.candidates)
