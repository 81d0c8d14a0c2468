"""The saturation scenario's figures: what the clients saw and what each simulator saw. Pure: no I/O.

More load is offered than the backends' limits allow, so a data plane that enforces them must queue or
turn requests away. The report puts the clients' side (latency, queue wait, rejections) next to the
backends' side (the peak concurrency each simulator saw, beside its limit).
"""

from __future__ import annotations

from typing import Any

import msgspec

from ollamaflow.bench.loadgen import LoadResult
from ollamaflow.bench.scenarios import percentile

__all__ = ["SaturationReport", "SaturationRow", "SimulatorLoad", "build_row", "simulator_load"]


class SimulatorLoad(msgspec.Struct, frozen=True, kw_only=True):
    """One simulated backend during one row: its limit and what it saw (warm-up included)."""

    backend: str
    limit: int  # the backend's MaxParallelRequests, summed over every data plane
    peak_concurrent: int  # most inference requests it answered at once (GET /_sim/stats)
    requests: int  # inference requests it received

    @property
    def within_limit(self) -> bool:
        return self.peak_concurrent <= self.limit


class SaturationRow(msgspec.Struct, frozen=True, kw_only=True):
    """One client format (Ollama's /api/chat or OpenAI's /v1/chat/completions) under saturation."""

    client: str  # "ollama" or "openai"
    path: str
    answered: int  # 2xx answers in the measured window
    rps: float  # answered per second
    p50_ms: float  # latency of the answered requests, queue wait included
    p90_ms: float
    p99_ms: float
    max_ms: float
    waited: int  # answered requests that had waited in a data plane's queue (X-OllamaFlow-Queue-Ms)
    queue_p50_ms: float  # the waits of those requests
    queue_p99_ms: float
    queue_max_ms: float
    rejected_503: int  # turned away the Ollama way (queue full or wait expired)
    rejected_429: int  # turned away the OpenAI way
    other_errors: int  # any other failure: other statuses, connection errors
    first_error: str = ""  # the first of those other failures
    statuses: dict[int, int] = {}  # every measured answer by HTTP status
    simulators: list[SimulatorLoad] = []

    @property
    def rejected(self) -> int:
        return self.rejected_503 + self.rejected_429


class SaturationReport(msgspec.Struct, frozen=True, kw_only=True):
    generator: str
    connections: int  # offered concurrency: closed-loop clients, spread over the data planes
    duration_s: float
    dataplanes: int
    max_parallel: int  # MaxParallelRequests of each backend (cluster-wide)
    rate_limit: int  # RateLimitRequestsThreshold of each backend (requests/s); 0 = none asked
    sim_latency_ms: float  # each simulator's delay before answering
    queue_size: int  # the frontend's queue, per data plane
    queue_timeout_ms: int
    reject_pause_ms: float  # a rejected client's pause before its next request
    rows: list[SaturationRow]

    @property
    def capacity(self) -> int:
        """Requests all backends together may run at once."""
        return self.max_parallel * len(self.rows[0].simulators) if self.rows else 0


def simulator_load(backend: str, limit: int, stats: dict[str, Any]) -> SimulatorLoad:
    """From a simulator's ``/_sim/stats``; its own control routes are not inference."""
    by_path: dict[str, int] = stats.get("by_path", {})
    return SimulatorLoad(
        backend=backend,
        limit=limit,
        peak_concurrent=int(stats.get("peak_concurrent", 0)),
        requests=sum(n for path, n in by_path.items() if not path.startswith("/_sim")),
    )


def build_row(
    client: str, path: str, results: list[LoadResult], simulators: list[SimulatorLoad]
) -> SaturationRow:
    """Merge the load generator processes' results (they measured over the same window)."""
    latencies = sorted(ms for r in results for ms in r.latencies_ms)
    waits = sorted(ms for r in results for ms in r.queue_waits_ms)
    statuses: dict[int, int] = {}
    for r in results:
        for status, count in r.statuses.items():
            statuses[status] = statuses.get(status, 0) + count
    errors = sum(r.errors for r in results)
    rejected_503, rejected_429 = statuses.get(503, 0), statuses.get(429, 0)
    elapsed = max((r.elapsed_s for r in results), default=0.0)
    return SaturationRow(
        client=client,
        path=path,
        answered=len(latencies),
        rps=len(latencies) / elapsed if elapsed > 0 else 0.0,
        p50_ms=percentile(latencies, 0.50),
        p90_ms=percentile(latencies, 0.90),
        p99_ms=percentile(latencies, 0.99),
        max_ms=latencies[-1] if latencies else 0.0,
        waited=len(waits),
        queue_p50_ms=percentile(waits, 0.50),
        queue_p99_ms=percentile(waits, 0.99),
        queue_max_ms=waits[-1] if waits else 0.0,
        rejected_503=rejected_503,
        rejected_429=rejected_429,
        other_errors=errors - rejected_503 - rejected_429,
        first_error=next((r.first_unexpected_error for r in results if r.first_unexpected_error), ""),
        statuses=dict(sorted(statuses.items())),
        simulators=simulators,
    )
