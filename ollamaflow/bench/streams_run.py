"""`ollamaflow bench --scenario streams`: N slow streams held open through one data plane, and the
memory each costs it.

With ``workers`` the data plane runs that many worker processes on its port
(``ollamaflow dataplane --workers``); its RSS is then the sum over the parent and its workers, and
each worker holds about its share of the streams, within its own open-files limit.

The simulator streams fast for a warm-up (so that the data plane has loaded and allocated what any
stream needs before its idle memory is read), then slowly: each stream lasts the time to open them
all plus ``duration_s``. While they run the data plane's RSS (/proc) and the simulator's count of
replies in flight are read every 100 ms.
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import httpx
import msgspec

from ollamaflow.bench.openloop import slot
from ollamaflow.bench.openloop_gen import raise_nofile
from ollamaflow.bench.procfs import open_files_limit, process_tree, tree_rss_kb
from ollamaflow.bench.scenarios import PASS_STREAM
from ollamaflow.bench.stack import sim_and_dataplane
from ollamaflow.bench.streams import (
    ANSWER_TOKENS,
    StreamsPlan,
    StreamsReport,
    StreamsResult,
    StreamsSpec,
    dataplane_connections,
    dataplane_files,
    generator_files,
    generators_for,
    merge_results,
    most_streams,
    per_stream_kb,
    plan_streams,
    simulators_for,
    streams_warnings,
)

__all__ = ["MAX_STREAMS", "StreamsOptions", "run_streams_scenario"]

MAX_STREAMS = 100_000
# Streams one generator process opens per second at most before a second one helps.
_PROCESS_OPEN_RATE = 1000.0
_START_DELAY_S = 1.5
_WARMUP_STREAMS = 32


@dataclass(frozen=True, slots=True)
class StreamsOptions:
    streams: int = 2000
    # Streams opened per second: about what a busy 2-core machine sets up with no backlog (each costs
    # the generator, the data plane and a simulator a connection and a request).
    open_rate: float = 400.0
    duration_s: float = 5.0  # seconds all of them are open together (at least 1)
    processes: int = 0  # 0: one per 1,000 streams/s opened, at most one per core
    nats_url: str | None = None
    workers: int = 1  # the data plane's worker processes


def _steady_rss(pid: int) -> int:
    """The median of a few readings over half a second."""
    readings = []
    for _ in range(5):
        readings.append(tree_rss_kb(pid))
        time.sleep(0.1)
    return int(statistics.median(readings))


def _warm_up(dataplane_url: str, workers: int) -> None:
    # A new connection per stream, and more streams for more workers, so that the kernel's spread
    # gives every worker some of them (at 64 workers, 512: a worker misses them all once in 3,000).
    with httpx.Client(timeout=30.0, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        for _ in range(max(_WARMUP_STREAMS, 8 * workers)):
            answer = client.post(dataplane_url + PASS_STREAM.path, content=PASS_STREAM.body)
            if answer.status_code != 200:
                raise RuntimeError(f"warm-up stream through the data plane: HTTP {answer.status_code}")


def _set_pace(sim_urls: tuple[str, ...], tokens_per_second: float) -> None:
    for url in sim_urls:
        answer = httpx.post(url + "/_sim/config", json={"tokens_per_second": tokens_per_second}, timeout=10.0)
        if answer.status_code != 200:
            raise RuntimeError(f"simulator refused its pace: HTTP {answer.status_code} {answer.text[:200]}")


def _in_flight(client: httpx.Client, sim_urls: tuple[str, ...]) -> int:
    """Replies the simulators are sending now, summed (each read a moment apart)."""
    total = 0
    for url in sim_urls:
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            total += int(client.get(url + "/_sim/stats").json()["in_flight"])
    return total


def _drive(
    plan: StreamsPlan, url: str, processes: int, sim_urls: tuple[str, ...], dp_pid: int
) -> tuple[list[StreamsResult], int, int]:
    """Run the generator processes; returns their results, the most streams open at once at the
    simulator, and the data plane's highest RSS meanwhile."""
    start_at = time.time() + _START_DELAY_S
    shares = [
        plan.streams // processes + (1 if i < plan.streams % processes else 0) for i in range(processes)
    ]
    peak_open = peak_rss = 0
    with contextlib.ExitStack() as stack:
        procs = []
        for index, count in enumerate(shares):
            rate, phase = slot(plan.open_rate, processes, index)
            spec = StreamsSpec(
                url=url,
                body=PASS_STREAM.body,
                count=count,
                rate=rate,
                phase_s=phase,
                start_at=start_at,
                timeout_s=plan.hold_s + 60.0,
            )
            out = stack.enter_context(tempfile.TemporaryFile())  # files: read only at the end
            err = stack.enter_context(tempfile.TemporaryFile())
            proc = subprocess.Popen(
                [sys.executable, "-m", "ollamaflow.bench.streams_gen"],
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
            )
            assert proc.stdin is not None
            proc.stdin.write(msgspec.json.encode(spec))
            proc.stdin.close()
            procs.append((proc, out, err))
        deadline = start_at + plan.hold_s + 120.0
        with httpx.Client(timeout=2.0) as client:
            while any(proc.poll() is None for proc, _, _ in procs):
                if time.time() > deadline:
                    for proc, _, _ in procs:
                        proc.kill()
                    raise RuntimeError("the streams did not end in time")
                peak_open = max(peak_open, _in_flight(client, sim_urls))
                peak_rss = max(peak_rss, tree_rss_kb(dp_pid))
                time.sleep(0.1)
        results = []
        for proc, out, err in procs:
            if proc.returncode != 0:
                err.seek(0)
                message = err.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"stream generator failed ({proc.returncode}): {message}")
            out.seek(0)
            results.append(msgspec.json.decode(out.read(), type=StreamsResult))
    return results, peak_open, peak_rss


def run_streams_scenario(options: StreamsOptions) -> StreamsReport:
    if not 1 <= options.streams <= MAX_STREAMS:
        raise RuntimeError(f"--streams must be between 1 and {MAX_STREAMS:,}")
    if not 0 < options.open_rate <= 100_000:
        raise RuntimeError("--rate must be above 0 and at most 100,000 streams/s")
    if not 1 <= options.workers <= 64:
        raise RuntimeError("--workers must be between 1 and 64")
    plan = plan_streams(options.streams, options.open_rate, options.duration_s)
    # The data plane (a child) inherits this process's limit: raise it before starting children.
    workers = options.workers
    need = dataplane_files(options.streams, workers)
    # The most any process of the run wants: the data plane's (or each worker's), or one generator's
    # holding every stream; raise_nofile stops at the hard limit.
    limit = raise_nofile(max(need, generator_files(options.streams, 1)))
    if limit < need:
        each = " each process of" if workers > 1 else ""
        raise RuntimeError(
            f"{options.streams:,} streams need about {need:,} open files in{each} the data plane (a "
            f"client and a backend connection each); the limit here is {limit:,} and cannot be raised "
            f"from this process, which allows at most {most_streams(limit, workers):,} streams: raise "
            "the hard limit (ulimit -Hn, LimitNOFILE), run more --workers (each worker is a process "
            "with its own limit) or lower --streams"
        )
    cores = os.cpu_count() or 1
    processes = options.processes or max(1, min(cores, math.ceil(options.open_rate / _PROCESS_OPEN_RATE)))
    processes = min(processes, options.streams)
    fewest = generators_for(options.streams, limit)
    if not fewest or (options.processes and processes < fewest):
        raise RuntimeError(
            f"{processes} stream generator process(es) cannot hold {options.streams:,} connections "
            f"within the open-files limit of {limit:,}: give more --processes (each holds its share"
            f"{f'; at least {fewest}' if fewest else ''}), or lower --streams"
        )
    processes = max(processes, fewest)  # each holds its share of the client connections
    sim_args = ["--answer-tokens", str(ANSWER_TOKENS)]
    connections = str(dataplane_connections(options.streams, workers))
    dataplane_env = {
        "OLLAMAFLOW_CLIENT_MAX_CONNECTIONS": connections,
        "OLLAMAFLOW_UPSTREAM_MAX_CONNECTIONS": connections,
        "OLLAMAFLOW_DATAPLANE_WORKERS": str(workers),
    }
    sims = simulators_for(options.streams)
    with sim_and_dataplane(options.nats_url, sim_args, dataplane_env, sims=sims) as stack:
        _warm_up(stack.dataplane_url, workers)
        idle = _steady_rss(stack.dataplane_pid)
        dataplane_limit = min(open_files_limit(member) for member in process_tree(stack.dataplane_pid))
        _set_pace(stack.sim_urls, plan.tokens_per_second)
        results, peak_open, peak_rss = _drive(
            plan, stack.dataplane_url + PASS_STREAM.path, processes, stack.sim_urls, stack.dataplane_pid
        )
    completed, errors, first_p50, first_p99, first_error, ramp = merge_results(results)
    return StreamsReport(
        generator=f"python/aiohttp ({processes} process{'es' if processes > 1 else ''})",
        streams=options.streams,
        open_rate=options.open_rate,
        hold_s=plan.hold_s,
        tokens_per_second=plan.tokens_per_second,
        completed=completed,
        errors=errors,
        all_completed=completed == options.streams and errors == 0,
        simulators=sims,
        peak_open=peak_open,
        idle_rss_kb=idle,
        open_rss_kb=max(peak_rss, idle),
        per_stream_kb=per_stream_kb(idle, peak_rss, peak_open),
        first_chunk_p50_ms=first_p50,
        first_chunk_p99_ms=first_p99,
        ramp_s=ramp,
        nofile_limit=dataplane_limit,
        first_error=first_error,
        warnings=streams_warnings(plan, peak_open, ramp),
        workers=workers,
    )
