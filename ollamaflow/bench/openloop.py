"""The open-loop scenario's pure parts: the send schedule, the summary, the added latency, the
warnings. No I/O.

A closed loop sends the next request only when an answer came, so a slow answer also delays the
requests behind it and is never seen queueing (coordinated omission). An open loop sends on a fixed
schedule whatever the answers do and measures each latency from the time the request was *due*: a
stall then shows as the latency of every request that should have gone out during it.
"""

from __future__ import annotations

import math

import msgspec

from ollamaflow.bench.scenarios import percentile

__all__ = [
    "LAG_WARN_MS",
    "SHORTFALL",
    "Added",
    "OpenLoopReport",
    "OpenLoopResult",
    "OpenLoopSpec",
    "OpenLoopSummary",
    "added",
    "default_processes",
    "due_at",
    "slot",
    "summarise_open",
    "warnings",
]

# One generator process keeps a schedule up to about this rate on this project's 2-core machine,
# sharing it with the simulator and a data plane (measured: its lag grows beyond it).
PROCESS_CEILING_RPS = 1500.0
# Below this fraction of the offered rate, or above this lag, the generator did not keep up.
SHORTFALL = 0.95
LAG_WARN_MS = 5.0


class OpenLoopSpec(msgspec.Struct, kw_only=True):
    """What one generator process sends: ``rate`` requests/s of its own, its first due ``phase_s``
    after the common start."""

    url: str
    body: bytes
    rate: float
    phase_s: float = 0.0
    duration_s: float = 5.0
    warmup_s: float = 1.0
    start_at: float = 0.0  # wall-clock time (time.time()) at which the schedule starts
    headers: dict[str, str] = {}
    # Connections of this process, as wrk2 keeps a fixed set: a request due while all are busy waits
    # for one, and that wait counts in its latency. Without a cap a late burst would open new
    # connections by the hundred and measure the connection storm instead.
    connections: int = 16
    # Requests one process lets be outstanding; one due beyond that is counted as dropped, so that a
    # stalled target cannot make the generator open sockets without end.
    max_in_flight: int = 5000
    timeout_s: float = 30.0


class OpenLoopResult(msgspec.Struct, kw_only=True):
    """One process's measured window: requests due in it, and of those the answered ones' latency
    (from the due time), when each was really sent after its due time, and the failures."""

    due: int
    sent_in_window: int  # requests whose send began inside the window (by the clock, not the schedule)
    latencies_ms: list[float]
    lags_ms: list[float]
    errors: int = 0
    dropped: int = 0
    unfinished: int = 0  # still unanswered when the run gave up waiting (counted in errors too)
    first_error: str = ""
    window_s: float = 0.0
    sent_total: int = 0  # every request sent, warm-up included (what the target served)


class OpenLoopSummary(msgspec.Struct, frozen=True, kw_only=True):
    offered_rps: float
    sent_rps: float  # what the generator really sent in the window
    ok_rps: float  # answered without error, of the requests due in the window
    requests: int
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    lag_p99_ms: float  # the generator's own lateness: due time to the send
    first_error: str = ""


class Added(msgspec.Struct, frozen=True, kw_only=True):
    """Latency through the data plane minus latency direct, at the same offered rate."""

    p50_ms: float
    p99_ms: float


class OpenLoopReport(msgspec.Struct, frozen=True, kw_only=True):
    generator: str
    scenario: str
    workers: int = 1  # worker processes of the data plane
    offered_rps: float
    duration_s: float
    direct: OpenLoopSummary
    through: OpenLoopSummary
    added: Added
    warnings: list[str] = []
    # The data plane's CPU time (user + system, all its processes) over every request sent through it.
    dataplane_cpu_ms_per_request: float = 0.0


def default_processes(rate: float, cores: int) -> int:
    """Generator processes for ``rate``: as few as keep the schedule, at most one per core."""
    return max(1, min(max(1, cores), math.ceil(rate / PROCESS_CEILING_RPS)))


def slot(rate: float, processes: int, index: int) -> tuple[float, float]:
    """(rate, phase) of process ``index`` of ``processes`` sharing ``rate``: each sends every
    ``processes / rate`` seconds, shifted by ``index / rate`` so that together they are evenly spaced."""
    return rate / processes, index / rate


def due_at(start: float, phase_s: float, rate: float, number: int) -> float:
    """When request ``number`` (from 0) of a process is due."""
    return start + phase_s + number / rate


def summarise_open(results: list[OpenLoopResult], offered_rps: float, duration_s: float) -> OpenLoopSummary:
    latencies = sorted(ms for r in results for ms in r.latencies_ms)
    lags = sorted(ms for r in results for ms in r.lags_ms)
    window = max((r.window_s for r in results), default=0.0) or duration_s
    errors = sum(r.errors + r.dropped for r in results)
    return OpenLoopSummary(
        offered_rps=offered_rps,
        sent_rps=sum(r.sent_in_window for r in results) / window if window > 0 else 0.0,
        ok_rps=len(latencies) / window if window > 0 else 0.0,
        requests=len(latencies),
        errors=errors,
        p50_ms=percentile(latencies, 0.50),
        p90_ms=percentile(latencies, 0.90),
        p99_ms=percentile(latencies, 0.99),
        max_ms=latencies[-1] if latencies else 0.0,
        lag_p99_ms=percentile(lags, 0.99),
        first_error=next((r.first_error for r in results if r.first_error), ""),
    )


def added(through: OpenLoopSummary, direct: OpenLoopSummary) -> Added:
    return Added(p50_ms=through.p50_ms - direct.p50_ms, p99_ms=through.p99_ms - direct.p99_ms)


def warnings(label: str, summary: OpenLoopSummary) -> list[str]:
    """Why a run's figures are not the offered rate's: the generator fell behind, or answers
    failed or came too slowly."""
    found = []
    if summary.sent_rps < SHORTFALL * summary.offered_rps:
        found.append(
            f"{label}: sent {summary.sent_rps:,.0f} req/s of {summary.offered_rps:,.0f} offered: the "
            "generator could not keep the schedule (try --processes, or a lower --rate)"
        )
    elif summary.lag_p99_ms > LAG_WARN_MS:
        found.append(
            f"{label}: the generator sent 1% of requests over {summary.lag_p99_ms:.1f} ms late: "
            "its own delay is in the latencies (the machine is busy)"
        )
    if summary.ok_rps < SHORTFALL * summary.offered_rps:
        found.append(
            f"{label}: answered {summary.ok_rps:,.0f} req/s of {summary.offered_rps:,.0f} offered "
            f"({summary.errors} errors)"
        )
    return found
