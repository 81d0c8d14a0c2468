"""Metrics read at scrape time from what the data plane keeps anyway: nothing is added per request.

Requests in flight and queued per backend and per frontend, this data plane's share of each backend's
parallel limit, ejected backends and ejections so far, clients refused by kind, the applied snapshot's
revision and age, and whether the data plane drains. Each scrape builds the families afresh from the
live objects (all on the event loop, like the scrape itself).
"""

from __future__ import annotations

import datetime
import time
from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from dataplane.drain import Drain
from dataplane.limits.admission import Admission
from dataplane.limits.breaker import Breakers
from dataplane.limits.traffic import Traffic
from dataplane.proxy.call import Call
from dataplane.routing.strategies import UNLIMITED
from dataplane.state import SnapshotState

__all__ = ["DataPlaneState", "snapshot_age"]

_PREFIX = "ollamaflow_dataplane_"


def snapshot_age(generated_at: str, now: float) -> float | None:
    """Seconds since an RFC 3339 ``generated_at``; None if it does not parse."""
    try:
        stamp = datetime.datetime.fromisoformat(generated_at.replace("Z", "+00:00"))
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.UTC)
    return now - stamp.timestamp()


class DataPlaneState(Collector):
    """A custom collector over the data plane's own counters and state."""

    def __init__(
        self,
        *,
        dataplane_id: str,
        version: str,
        traffic: Traffic,
        admission: Admission,
        breakers: Breakers,
        state: SnapshotState,
        drain: Drain,
        live: set[Call],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._id = dataplane_id
        self._version = version
        self._traffic = traffic
        self._admission = admission
        self._breakers = breakers
        self._state = state
        self._drain = drain
        self._live = live
        self._clock = clock
        self.applied_at = 0.0  # wall-clock time the current snapshot was applied
        state.listeners.append(self._applied)

    def _applied(self, _snapshot: object) -> None:
        self.applied_at = self._clock()

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        info = GaugeMetricFamily(
            _PREFIX + "info", "This data plane: its id and version (always 1)", labels=["id", "version"]
        )
        info.add_metric([self._id, self._version], 1)
        yield info
        yield _by(
            "in_flight",
            "Requests under way on each backend (sent, or about to be)",
            "backend",
            self._traffic.in_flight,
        )
        yield _by(
            "queued",
            "Requests waiting in a queue that could go to each backend",
            "backend",
            self._admission.queued(),
        )
        frontends: Counter[str] = Counter(call.frontend_id for call in self._live)
        yield _by(
            "frontend_in_flight",
            "Requests under way per frontend once their body arrived (queued ones included)",
            "frontend",
            frontends,
        )
        yield _by(
            "frontend_queued",
            "Requests waiting in each frontend's queue",
            "frontend",
            self._admission.gates.queued_by_frontend(),
        )
        yield _by(
            "backend_slots",
            "This data plane's share of each backend's MaxParallelRequests (absent: no limit)",
            "backend",
            {b: slots for b, slots in self._admission.gates.limits.items() if slots < UNLIMITED},
        )
        ejected = GaugeMetricFamily(
            _PREFIX + "backend_ejected",
            "1 for each backend this data plane stopped sending to after failures (passive health)",
            labels=["backend"],
        )
        for backend in self._breakers.ejected():
            ejected.add_metric([backend], 1)
        yield ejected
        ejections = CounterMetricFamily(
            _PREFIX + "backend_ejections", "Times each backend was ejected since start", labels=["backend"]
        )
        for backend, count in self._breakers.ejections.items():
            ejections.add_metric([backend], count)
        yield ejections
        refused = CounterMetricFamily(
            _PREFIX + "client_errors",
            "Clients refused by kind (oversized or late headers, bodies too large or too slow, "
            "connections over the limit, bad request bodies...)",
            labels=["kind"],
        )
        for kind, count in self._traffic.client_errors.items():
            refused.add_metric([kind], count)
        yield refused
        yield _single(
            CounterMetricFamily,
            "proxied_requests",
            "Proxied requests accepted since start",
            self._traffic.requests_total,
        )
        snapshot = self._state.snapshot
        yield _single(
            GaugeMetricFamily,
            "snapshot_revision",
            "Revision of the snapshot this data plane routes by (0: none yet)",
            self._state.revision,
        )
        if snapshot is not None:
            now = self._clock()
            age = snapshot_age(snapshot.generated_at, now)
            if age is not None:
                yield _single(
                    GaugeMetricFamily,
                    "snapshot_age_seconds",
                    "Seconds since the control plane generated the applied snapshot",
                    age,
                )
            if self.applied_at:
                yield _single(
                    GaugeMetricFamily,
                    "snapshot_applied_timestamp_seconds",
                    "Unix time the applied snapshot was applied here",
                    self.applied_at,
                )
        yield _single(
            GaugeMetricFamily,
            "snapshot_rejected",
            "1 while the last snapshot offered was rejected (the data plane keeps its last good one)",
            1 if self._state.rejected else 0,  # not a secrets problem of an applied one
        )
        yield _single(
            GaugeMetricFamily,
            "draining",
            "1 once the data plane stops and drains its requests",
            1 if self._drain.draining else 0,
        )


def _by(name: str, documentation: str, label: str, values: dict[str, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(_PREFIX + name, documentation, labels=[label])
    for key, value in values.items():
        family.add_metric([key], value)
    return family


def _single(kind: type, name: str, documentation: str, value: float) -> GaugeMetricFamily:
    family = kind(_PREFIX + name, documentation, value=value)
    return family  # type: ignore[no-any-return]
