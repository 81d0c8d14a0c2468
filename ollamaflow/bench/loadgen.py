"""The Python load generator: the fallback when wrk is not installed.

A closed loop of aiohttp clients, in processes of their own so that they never share a GIL with what
they measure. One such process tops out near 4k requests/s, so ``run_python`` spreads the connections
over several processes that start their clocks together and merges their latencies.

``python -m ollamaflow.bench.loadgen`` reads a ``LoadSpec`` as JSON on stdin and writes a
``LoadResult`` as JSON on stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from dataclasses import dataclass, field

import aiohttp
import msgspec

from ollamaflow.bench import workers
from ollamaflow.bench.scenarios import Measured, summarise

__all__ = [
    "QUEUE_HEADER",
    "REJECT_STATUSES",
    "LoadResult",
    "LoadSpec",
    "run_load",
    "run_processes",
    "run_python",
]

# Time the processes get to import and connect before the common clock starts.
_START_DELAY_S = 1.5
# Sent by a data plane on an answer that waited in its queue: the wait in milliseconds.
QUEUE_HEADER = "X-OllamaFlow-Queue-Ms"
# What a data plane answers when its queue is full or a wait expired (Ollama's and OpenAI's way).
REJECT_STATUSES = frozenset({503, 429})


class LoadSpec(msgspec.Struct, kw_only=True):
    url: str
    body: bytes
    concurrency: int = 32
    duration_s: float = 5.0
    warmup_s: float = 1.0
    # Wall-clock time (time.time()) at which the warm-up starts; 0 = as soon as the process is up.
    start_at: float = 0.0
    headers: dict[str, str] = {}
    # After a 503/429 the client waits this long before its next request, as a real client backs off,
    # so that rejections do not turn the closed loop into a busy loop.
    reject_pause_s: float = 0.0


class LoadResult(msgspec.Struct, kw_only=True):
    requests: int
    errors: int
    elapsed_s: float
    latencies_ms: list[float]
    warmup_requests: int = 0
    first_error: str = ""
    # Measured answers by HTTP status (failures without one are in ``errors`` only).
    statuses: dict[int, int] = {}
    # QUEUE_HEADER of the measured answers that carried it (successful ones only).
    queue_waits_ms: list[float] = []
    # The first failure other than a 503/429 rejection.
    first_unexpected_error: str = ""


@dataclass(slots=True)
class _Tally:
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""
    warmup_requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    queue_waits_ms: list[float] = field(default_factory=list)
    first_unexpected_error: str = ""


async def _worker(
    session: aiohttp.ClientSession, spec: LoadSpec, measure_from: float, stop_at: float, tally: _Tally
) -> None:
    while True:
        started = time.perf_counter()
        if started >= stop_at:
            return
        error = ""
        status = 0
        waited = None
        try:
            async with session.post(spec.url, data=spec.body, headers=spec.headers) as resp:
                # Read the whole body, chunk by chunk, as a streaming client would.
                async for _ in resp.content.iter_any():
                    pass
                status = resp.status
                waited = resp.headers.get(QUEUE_HEADER)
                if status >= 400:
                    error = f"HTTP {status}"
        except (aiohttp.ClientError, OSError) as exc:
            error = repr(exc)
        if started >= measure_from:
            _count(tally, started, status, error, waited)
        else:
            tally.warmup_requests += 1
        if status in REJECT_STATUSES and spec.reject_pause_s > 0:
            await asyncio.sleep(spec.reject_pause_s)


def _count(tally: _Tally, started: float, status: int, error: str, waited: str | None) -> None:
    if status:
        tally.statuses[status] = tally.statuses.get(status, 0) + 1
    if error:
        tally.errors += 1
        tally.first_error = tally.first_error or error
        if status not in REJECT_STATUSES:
            tally.first_unexpected_error = tally.first_unexpected_error or error
        return
    tally.latencies_ms.append((time.perf_counter() - started) * 1000.0)
    if waited is not None:
        try:
            tally.queue_waits_ms.append(float(waited))
        except ValueError:
            tally.first_unexpected_error = tally.first_unexpected_error or f"bad {QUEUE_HEADER}: {waited!r}"


async def run_load(spec: LoadSpec) -> LoadResult:
    connector = aiohttp.TCPConnector(limit=spec.concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=60)
    tally = _Tally()
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers={"Content-Type": "application/json"}
    ) as session:
        if spec.start_at:
            await asyncio.sleep(max(0.0, spec.start_at - time.time()))
        now = time.perf_counter()
        measure_from = now + spec.warmup_s
        stop_at = measure_from + spec.duration_s
        await asyncio.gather(
            *(_worker(session, spec, measure_from, stop_at, tally) for _ in range(spec.concurrency))
        )
        elapsed = time.perf_counter() - measure_from
    return LoadResult(
        requests=len(tally.latencies_ms),
        errors=tally.errors,
        elapsed_s=elapsed,
        latencies_ms=tally.latencies_ms,
        warmup_requests=tally.warmup_requests,
        first_error=tally.first_error,
        statuses=tally.statuses,
        queue_waits_ms=tally.queue_waits_ms,
        first_unexpected_error=tally.first_unexpected_error,
    )


def _shares(connections: int, processes: int) -> list[int]:
    """Split ``connections`` over at most ``processes`` processes, none of them empty."""
    processes = max(1, min(processes, connections))
    base, extra = divmod(connections, processes)
    return [base + (1 if i < extra else 0) for i in range(processes)]


def run_processes(
    urls: list[str],
    body: bytes,
    *,
    connections: int,
    duration_s: float,
    warmup_s: float,
    processes: int,
    reject_pause_s: float = 0.0,
    headers: dict[str, str] | None = None,
) -> list[LoadResult]:
    """Drive load from generator processes that start their clocks together; process i sends to
    ``urls[i % len(urls)]`` (at least one process per URL)."""
    start_at = time.time() + _START_DELAY_S
    with contextlib.ExitStack() as stack:
        procs = []
        for i, share in enumerate(_shares(connections, max(processes, len(urls)))):
            spec = LoadSpec(
                url=urls[i % len(urls)],
                body=body,
                concurrency=share,
                duration_s=duration_s,
                warmup_s=warmup_s,
                start_at=start_at,
                reject_pause_s=reject_pause_s,
                headers=headers or {},
            )
            # Every process gets its spec now, so that all start their clocks at ``start_at``
            # (handed over one after another's end, they would run one after another).
            procs.append(workers.start(stack, "ollamaflow.bench.loadgen", spec))
        return workers.collect(procs, LoadResult, "load generator")


def run_python(
    url: str,
    body: bytes,
    *,
    connections: int,
    duration_s: float,
    warmup_s: float,
    processes: int,
    host: str = "",
) -> Measured:
    """Drive load from ``processes`` generator processes at once and merge what they measured;
    ``host`` replaces the Host header of the URL."""
    results = run_processes(
        [url],
        body,
        connections=connections,
        duration_s=duration_s,
        warmup_s=warmup_s,
        processes=processes,
        headers={"Host": host} if host else None,
    )
    latencies = [ms for r in results for ms in r.latencies_ms]
    errors = sum(r.errors for r in results)
    first_error = next((r.first_error for r in results if r.first_error), "")
    # The processes measured over the same window; the slowest one to finish bounds it.
    elapsed = max(r.elapsed_s for r in results)
    sent = sum(r.requests + r.errors + r.warmup_requests for r in results)
    return Measured(summary=summarise(latencies, errors, elapsed, first_error), sent=sent)


def main() -> None:
    spec = msgspec.json.decode(sys.stdin.buffer.read(), type=LoadSpec)
    workers.use_uvloop()
    workers.write_result(asyncio.run(run_load(spec)))


if __name__ == "__main__":
    main()
