"""PURE: one backend's health state machine, driven by probe results and an injected time.

Before its first probe a backend is *unknown*: ``checked`` is False and ``healthy`` is False, so data
planes send it no traffic (an address nobody has verified takes no requests). The first probe is sent
at once, and its first result decides straight away (a success makes it healthy, a failure unhealthy)
so that a new backend takes traffic one round trip after it is created. From then on the thresholds
apply: ``unhealthy_threshold`` consecutive failures make a healthy backend unhealthy and
``healthy_threshold`` consecutive successes bring it back. A state carried over from an earlier
snapshot (``seeded``) counts as checked, so a control-plane restart does not make backends flap.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["COUNTER_CAP", "Health", "Thresholds", "timespan"]

COUNTER_CAP = 1_000_000


@dataclass(frozen=True, slots=True)
class Thresholds:
    healthy: int = 2
    unhealthy: int = 2


@dataclass(slots=True)
class Health:
    """What one replica knows about one backend's health."""

    healthy: bool = False
    checked: bool = False
    successes: int = 0
    """Consecutive successful probes (0 after a failure)."""
    failures: int = 0
    """Consecutive failed probes (0 after a success)."""
    healthy_since: datetime | None = None
    unhealthy_since: datetime | None = None
    last_check: datetime | None = None
    last_error: str = ""
    latency_ms: float | None = None
    """How long the last successful probe took (None before one, or after a failure)."""

    @classmethod
    def seeded(cls, healthy: bool, now: datetime) -> Health:
        """A state taken over from a published snapshot (e.g. after a restart)."""
        return cls(
            healthy=healthy,
            checked=True,
            healthy_since=now if healthy else None,
            unhealthy_since=None if healthy else now,
        )

    def record(
        self, ok: bool, now: datetime, thresholds: Thresholds, error: str = "", seconds: float | None = None
    ) -> bool:
        """Apply one probe result (``seconds``: how long it took); True if ``healthy`` or ``checked``
        changed."""
        first = not self.checked
        before = self.healthy
        self.checked = True
        self.last_check = now
        self.latency_ms = round(seconds * 1000, 1) if ok and seconds is not None else None
        if ok:
            self.successes = min(self.successes + 1, COUNTER_CAP)
            self.failures = 0
            self.last_error = ""
            if not self.healthy and (first or self.successes >= thresholds.healthy):
                self.healthy = True
                self.healthy_since, self.unhealthy_since = now, None
        else:
            self.failures = min(self.failures + 1, COUNTER_CAP)
            self.successes = 0
            self.last_error = error
            if first or (self.healthy and self.failures >= thresholds.unhealthy):
                self.healthy = False
                self.healthy_since, self.unhealthy_since = None, now
        return first or self.healthy != before

    def uptime(self, now: datetime) -> timedelta | None:
        return now - self.healthy_since if self.healthy and self.healthy_since else None

    def downtime(self, now: datetime) -> timedelta | None:
        return now - self.unhealthy_since if not self.healthy and self.unhealthy_since else None


def timespan(span: timedelta | None) -> str | None:
    """A duration as .NET's TimeSpan prints it (OllamaFlow's Uptime): ``[d.]hh:mm:ss.fffffff``."""
    if span is None:
        return None
    ticks = max(0, round(span.total_seconds() * 10_000_000))
    seconds, fraction = divmod(ticks, 10_000_000)
    minutes, secs = divmod(seconds, 60)
    hours, mins = divmod(minutes, 60)
    days, hrs = divmod(hours, 24)
    text = f"{hrs:02d}:{mins:02d}:{secs:02d}.{fraction:07d}"
    return f"{days}.{text}" if days else text
