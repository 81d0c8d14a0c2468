"""`ollamaflow bench --scenario open-loop`: the same fixed rate straight at a simulator and through a
data plane, the latency the data plane adds at that rate, and its CPU time per request (at a fixed
rate it wakes about as often as in production, unlike in a saturated closed loop)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ollamaflow.bench.openloop import OpenLoopReport, added, default_processes, summarise_open, warnings
from ollamaflow.bench.openloop_gen import run_open_processes
from ollamaflow.bench.procfs import cpu_seconds
from ollamaflow.bench.scenarios import SCENARIOS
from ollamaflow.bench.stack import sim_and_dataplane

__all__ = ["OpenLoopOptions", "run_open_loop"]

# Above this the generator's processes cannot keep any schedule on a small machine: refuse.
MAX_RATE = 50_000.0


@dataclass(frozen=True, slots=True)
class OpenLoopOptions:
    rate: float = 1000.0
    duration_s: float = 5.0
    warmup_s: float = 1.0
    connections: int = 32  # in all, shared by the processes
    processes: int = 0  # 0: as few as the rate needs (one per ~PROCESS_CEILING_RPS), at most one per core
    nats_url: str | None = None
    workers: int = 1  # worker processes of the data plane (ollamaflow dataplane --workers)


def run_open_loop(options: OpenLoopOptions) -> OpenLoopReport:
    if not 0 < options.rate <= MAX_RATE:
        raise RuntimeError(f"--rate must be above 0 and at most {MAX_RATE:,.0f} requests/s")
    scenario = SCENARIOS[0]  # non-streamed chat: its latency is the whole answer's
    processes = options.processes or default_processes(options.rate, os.cpu_count() or 1)

    def drive(url: str) -> list:
        return run_open_processes(
            url + scenario.path,
            scenario.body,
            rate=options.rate,
            processes=processes,
            duration_s=options.duration_s,
            warmup_s=options.warmup_s,
            connections=options.connections,
        )

    workers = {"OLLAMAFLOW_DATAPLANE_WORKERS": str(options.workers)}
    with sim_and_dataplane(options.nats_url, dataplane_env=workers) as stack:
        direct = summarise_open(drive(stack.sim_url), options.rate, options.duration_s)
        cpu_before = cpu_seconds(stack.dataplane_pid)
        results = drive(stack.dataplane_url)
        cpu_used = cpu_seconds(stack.dataplane_pid) - cpu_before
        through = summarise_open(results, options.rate, options.duration_s)
    served = sum(r.sent_total for r in results)
    return OpenLoopReport(
        generator=f"python/aiohttp ({processes} process{'es' if processes > 1 else ''}, "
        f"{options.connections} connections)",
        scenario=scenario.name,
        workers=options.workers,
        offered_rps=options.rate,
        duration_s=options.duration_s,
        direct=direct,
        through=through,
        added=added(through, direct),
        warnings=warnings("direct", direct) + warnings("via DP", through),
        dataplane_cpu_ms_per_request=cpu_used * 1000.0 / max(1, served),
    )
