"""Passive health: what this data plane itself sees of each backend, as one circuit breaker per backend.

Pure state machine with an injected clock. A failed connection ejects a backend at once; so does a run
of ``threshold`` server errors (5xx or no answer in time) in a row. An ejected backend gets no new
requests until ``cooldown`` seconds have passed; then one trial request goes through (half-open). Its
success closes the breaker, its failure ejects the backend for another cool-down.

The hot path asks ``allows`` once per attempt: one dict lookup while nothing is ejected.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Breakers"]


@dataclass(slots=True)
class _Ejection:
    reason: str
    until: float  # clock time after which one trial request may go
    trial: bool = False  # a trial request is under way (half-open)


@dataclass(slots=True)
class Breakers:
    """The breakers of every backend this process sends to, keyed by backend id."""

    clock: Callable[[], float]  # monotonic seconds
    threshold: int = 3  # server errors in a row that eject a backend
    cooldown: float = 10.0  # seconds an ejected backend rests before a trial request
    _errors: dict[str, int] = field(default_factory=dict)  # consecutive server errors, closed breakers
    _ejected: dict[str, _Ejection] = field(default_factory=dict)
    # Ejections so far per backend (for the metrics; a failed trial counts as a new one).
    ejections: dict[str, int] = field(default_factory=dict)

    def allows(self, backend: str) -> bool:
        """May a new request go to ``backend``? After the cool-down, True once: the trial request."""
        ejection = self._ejected.get(backend)
        if ejection is None:
            return True
        if ejection.trial or self.clock() < ejection.until:
            return False
        ejection.trial = True
        return True

    def succeeded(self, backend: str) -> None:
        if self._errors:
            self._errors.pop(backend, None)
        if self._ejected:
            self._ejected.pop(backend, None)

    def abandoned(self, backend: str) -> None:
        """A request ended without an outcome (the client left): a trial it was may go again."""
        ejection = self._ejected.get(backend)
        if ejection is not None:
            ejection.trial = False

    @property
    def active(self) -> bool:
        """Is any backend ejected? While not, nobody needs to ask ``allows``."""
        return bool(self._ejected)

    def unreachable(self, backend: str, reason: str) -> None:
        """The connection failed: eject at once."""
        self._eject(backend, reason)

    def server_error(self, backend: str, reason: str) -> None:
        """A 5xx or a timeout: eject after ``threshold`` in a row (a failed trial ejects again at once)."""
        if backend in self._ejected:
            self._eject(backend, reason)
            return
        count = self._errors.get(backend, 0) + 1
        if count >= self.threshold:
            self._eject(backend, f"{count} server errors in a row; last: {reason}")
        else:
            self._errors[backend] = count

    def ejected(self) -> dict[str, str]:
        """Ejected backends (trial pending or under way included) -> why, for the report."""
        return {backend: ejection.reason for backend, ejection in self._ejected.items()}

    def _eject(self, backend: str, reason: str) -> None:
        self._errors.pop(backend, None)
        self.ejections[backend] = self.ejections.get(backend, 0) + 1
        self._ejected[backend] = _Ejection(reason, self.clock() + self.cooldown)
