"""When ``ollamaflow up`` starts a child again that died, and when it gives up on it.

Pure: the caller passes the time in (monotonic seconds) and carries out the decision. A part of the
cluster (a plane, the embedded NATS or PostgreSQL) is restarted after a delay that starts at
``first_delay`` and doubles up to ``max_delay``; a run of ``stable_after`` seconds or more resets it.
Exiting again after ``max_restarts`` restarts within ``window`` seconds is a crash loop: ``up`` gives
up. A simulated backend is not a part: it comes back after a fixed pause and is never given up on.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

__all__ = ["BACKEND_POLICY", "PART_POLICY", "GiveUp", "Restart", "RestartPolicy", "RestartTracker"]


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    first_delay: float = 0.5
    max_delay: float = 30.0
    stable_after: float = 30.0
    # None: never give up.
    max_restarts: int | None = 5
    window: float = 60.0


PART_POLICY = RestartPolicy()
BACKEND_POLICY = RestartPolicy(first_delay=5.0, max_delay=5.0, max_restarts=None)


@dataclass(frozen=True, slots=True)
class Restart:
    """Start it again ``delay`` seconds from now; ``count``: its restarts so far, this one included."""

    delay: float
    count: int


@dataclass(frozen=True, slots=True)
class GiveUp:
    """A crash loop: ``reason`` says why, for the last words of ``up``."""

    reason: str


class RestartTracker:
    """The restart history of one child."""

    def __init__(self, policy: RestartPolicy, *, started_at: float) -> None:
        self.policy = policy
        self._started_at = started_at
        self._delay = policy.first_delay
        self._count = 0
        self._recent: deque[float] = deque()  # when the restarts within the window happened

    @property
    def count(self) -> int:
        return self._count

    def exited(self, now: float) -> Restart | GiveUp:
        """The child was found dead at ``now``: what to do."""
        policy = self.policy
        if now - self._started_at >= policy.stable_after:
            self._delay = policy.first_delay
        while self._recent and now - self._recent[0] > policy.window:
            self._recent.popleft()
        if policy.max_restarts is not None and len(self._recent) >= policy.max_restarts:
            return GiveUp(
                f"it exited again after {len(self._recent)} restarts within {policy.window:g} s "
                f"(the limit is {policy.max_restarts})"
            )
        delay = self._delay
        self._delay = min(delay * 2, policy.max_delay)
        self._count += 1
        return Restart(delay=delay, count=self._count)

    def restarted(self, now: float) -> None:
        """The child was started again at ``now``."""
        self._started_at = now
        self._recent.append(now)
