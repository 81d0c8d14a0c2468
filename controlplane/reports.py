"""Data-plane reports: the last report of each data plane, when it came, and which data planes are live.

A data plane is live while its last report is at most ``ttl`` seconds old. The live set goes into the
snapshot (``cluster.dataplanes``), so a change of it calls ``on_live_change`` (the publisher's trigger):
at once when a new data plane appears, and from ``run_expiry`` when one falls silent.
Each live data plane's demand per backend (in-flight + queued, from its last report) is what the
backends' limits are split by; when its quantised level changes, ``on_demand_change`` is called (the
publisher's trigger again; the share split's hysteresis keeps small changes from making a revision).
Likewise each live data plane's demand per API key (its requests per second with that key, from the
growth of the key's counters between two reports), which the keys' rate limits are split by.
A backend that a live data plane's report newly names as ejected (its passive circuit breaker opened)
is passed to ``on_ejected``, so the monitor can probe it at once; ``ejections`` is the admin view of it.
A data plane that reports ``draining`` (it got SIGTERM and finishes what it runs) stays live but is
leaving: ``draining_ids`` names it, its shares go to the others (``controlplane.publish.shares``), and
every change of its demand counts (not only a new level), so its slots come back request by request.
Its last report says ``stopped``: from then on it is not live, without waiting for the TTL.
State is in memory: every replica hears every report, so each keeps its own copy.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import msgspec

from controlplane.clock import Clock
from controlplane.publish.shares import demand_level
from shared.wire.reports import DataPlaneReport, decode_report

__all__ = ["DataPlaneRegistry", "Sighting"]

log = logging.getLogger("ollamaflow.controlplane.reports")


@dataclass(frozen=True, slots=True)
class Sighting:
    """The last report of one data plane and when it arrived."""

    report: DataPlaneReport
    seen_at: datetime
    seen_monotonic: float
    key_demand: dict[str, int] = field(default_factory=dict)  # API key id -> requests per second


class DataPlaneRegistry:
    """Every data plane heard from recently, keyed by its id."""

    def __init__(
        self,
        *,
        ttl: float,
        clock: Clock,
        on_live_change: Callable[[], None] = lambda: None,
        on_ejected: Callable[[str], None] = lambda _backend: None,
        on_demand_change: Callable[[], None] = lambda: None,
        on_report: Callable[[DataPlaneReport], None] = lambda _report: None,
        forget_after: float | None = None,
    ) -> None:
        self.ttl = ttl
        self._clock = clock
        self._on_live_change = on_live_change
        self._on_ejected = on_ejected
        self._on_demand_change = on_demand_change
        self._on_report = on_report  # every report recorded (API key usage)
        # Silent data planes stay listed (as not live) for a while, then are forgotten.
        self._forget_after = forget_after if forget_after is not None else max(300.0, 30 * ttl)
        self._sightings: dict[str, Sighting] = {}
        self._live: frozenset[str] = frozenset()

    def record(self, report: DataPlaneReport) -> None:
        previous = self._sightings.get(report.id)
        known = previous.report.ejected if previous is not None and self.is_live(previous) else {}
        now = self._clock.monotonic()
        keys = _key_demand(previous, report, now) if previous is not None else {}
        sighting = Sighting(report, self._clock.now(), now, keys)
        self._sightings[report.id] = sighting
        if report.id not in self._live or report.stopped:
            self.check()
        elif previous is not None and _levels(previous) != _levels(sighting):
            self._on_demand_change()
        for backend in sorted(report.ejected.keys() - known.keys()):
            self._on_ejected(backend)
        self._on_report(report)

    def ejections(self) -> dict[str, dict[str, str]]:
        """Backend id -> {data plane id: reason}, from every live data plane's last report."""
        found: dict[str, dict[str, str]] = {}
        for sighting in self.sightings():
            if self.is_live(sighting):
                for backend, reason in sighting.report.ejected.items():
                    found.setdefault(backend, {})[sighting.report.id] = reason
        return found

    async def handle(self, data: bytes) -> None:
        """Bus callback: record one encoded report; ignore (and log) anything unreadable."""
        try:
            report = decode_report(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.debug("ignoring an unreadable data-plane report: %s", exc)
            return
        if not report.id:
            log.debug("ignoring a data-plane report without an id")
            return
        self.record(report)

    def is_live(self, sighting: Sighting) -> bool:
        if sighting.report.stopped:
            return False
        return self._clock.monotonic() - sighting.seen_monotonic <= self.ttl

    def draining_ids(self) -> frozenset[str]:
        """Live data planes that are stopping (their limit shares go to the others)."""
        return frozenset(
            s.report.id for s in self._sightings.values() if s.report.draining and self.is_live(s)
        )

    def demand(self) -> dict[str, dict[str, int]]:
        """Live data plane id -> backend id -> its requests in flight plus queued there, by id."""
        return {s.report.id: _demand_of(s.report) for s in self.sightings() if self.is_live(s)}

    def key_demand(self) -> dict[str, dict[str, int]]:
        """Live data plane id -> API key id -> its requests per second there, by id."""
        return {s.report.id: dict(s.key_demand) for s in self.sightings() if self.is_live(s)}

    def live_ids(self) -> frozenset[str]:
        return frozenset(id_ for id_, s in self._sightings.items() if self.is_live(s))

    def sightings(self) -> list[Sighting]:
        """Every data plane still remembered, live or not, by id."""
        return [self._sightings[id_] for id_ in sorted(self._sightings)]

    def check(self) -> bool:
        """Recompute the live set (forgetting long-silent data planes); True and notify if it changed."""
        now = self._clock.monotonic()
        for id_, sighting in list(self._sightings.items()):
            if now - sighting.seen_monotonic > self._forget_after:
                del self._sightings[id_]
        live = self.live_ids()
        if live == self._live:
            return False
        self._live = live
        self._on_live_change()
        return True

    async def run_expiry(self) -> None:
        """Notice data planes falling silent, a few times per TTL."""
        period = min(max(self.ttl / 4, 0.01), 1.0)
        while True:
            await asyncio.sleep(period)
            self.check()


def _demand_of(report: DataPlaneReport) -> dict[str, int]:
    found = dict(report.in_flight)
    for backend, waiting in report.queued.items():
        found[backend] = found.get(backend, 0) + waiting
    return {backend: count for backend, count in sorted(found.items()) if count > 0}


def _key_demand(previous: Sighting, report: DataPlaneReport, now: float) -> dict[str, int]:
    """Each key's requests per second (accepted or refused) between two reports of one data plane,
    rounded up; a restarted data plane (new start id) counts from zero."""
    elapsed = max(now - previous.seen_monotonic, 0.1)
    before = previous.report.key_usage if previous.report.start_id == report.start_id else {}
    found = {}
    for key, usage in sorted(report.key_usage.items()):
        old = before.get(key)
        grown = usage.requests + usage.rate_limited - (old.requests + old.rate_limited if old else 0)
        if grown > 0:
            found[key] = math.ceil(grown / elapsed)
    return found


def _levels(sighting: Sighting) -> tuple[bool, dict[str, int], dict[str, int]]:
    demand = _demand_of(sighting.report)
    draining = sighting.report.draining
    # A draining plane holds exactly its demand: each request it finishes frees a slot for the others.
    backends = demand if draining else {backend: demand_level(count) for backend, count in demand.items()}
    return draining, backends, {key: demand_level(count) for key, count in sighting.key_demand.items()}
