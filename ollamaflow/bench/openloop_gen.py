"""The open-loop generator: aiohttp requests sent on a fixed schedule, each in its own task, whatever
the earlier ones are doing; latency counts from the time a request was due.

A process keeps its schedule up to ``PROCESS_CEILING_RPS`` or so on a shared 2-core machine; past
that its sends run late (``lags_ms`` shows by how much) and the runner warns. ``run_open_processes``
spreads a rate over processes that start their clocks together.

``python -m ollamaflow.bench.openloop_gen`` reads an ``OpenLoopSpec`` as JSON on stdin and writes an
``OpenLoopResult`` as JSON on stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import sys
import time
from dataclasses import dataclass, field

import aiohttp
import msgspec

from ollamaflow.bench import workers
from ollamaflow.bench.openloop import OpenLoopResult, OpenLoopSpec, due_at, slot

__all__ = ["raise_nofile", "run_open", "run_open_processes"]

# Time the processes get to import and connect before the common clock starts.
_START_DELAY_S = 1.5


def raise_nofile(wanted: int) -> int:
    """Raise this process's soft limit on open files towards ``wanted`` (at most the hard limit, or
    above it when privileged); returns the soft limit now in force. Children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    if hard != resource.RLIM_INFINITY and hard < wanted:
        with contextlib.suppress(ValueError, OSError):  # only root may raise the hard limit
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass(slots=True)
class _Window:
    measure_from: float
    stop_at: float
    latencies_ms: list[float] = field(default_factory=list)
    lags_ms: list[float] = field(default_factory=list)
    due: int = 0
    sent: int = 0
    sent_total: int = 0
    errors: int = 0
    dropped: int = 0
    first_error: str = ""

    def fail(self, error: str) -> None:
        self.errors += 1
        self.first_error = self.first_error or error


async def _one(session: aiohttp.ClientSession, spec: OpenLoopSpec, due: float, window: _Window) -> None:
    sent = time.perf_counter()
    window.sent_total += 1
    measured = window.measure_from <= due < window.stop_at
    if window.measure_from <= sent < window.stop_at:
        window.sent += 1
    error = ""
    try:
        async with session.post(spec.url, data=spec.body, headers=spec.headers) as resp:
            await resp.read()  # whole, as a client does
            if resp.status >= 400:
                error = f"HTTP {resp.status}"
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        error = repr(exc)
    if not measured:
        return
    if error:
        window.fail(error)
        return
    window.latencies_ms.append((time.perf_counter() - due) * 1000.0)
    window.lags_ms.append((sent - due) * 1000.0)


async def run_open(spec: OpenLoopSpec) -> OpenLoopResult:
    connector = aiohttp.TCPConnector(limit=spec.connections)
    timeout = aiohttp.ClientTimeout(total=spec.timeout_s)
    tasks: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers={"Content-Type": "application/json"}
    ) as session:
        if spec.start_at:
            await asyncio.sleep(max(0.0, spec.start_at - time.time()))
        start = time.perf_counter()
        window = _Window(measure_from=start + spec.warmup_s, stop_at=start + spec.warmup_s + spec.duration_s)
        number = 0
        while True:
            due = due_at(start, spec.phase_s, spec.rate, number)
            if due >= window.stop_at:
                break
            now = time.perf_counter()
            if due > now:
                await asyncio.sleep(due - now)
                continue
            number += 1
            measured = due >= window.measure_from
            window.due += measured
            if len(tasks) >= spec.max_in_flight:
                if measured:
                    window.dropped += 1
                    window.first_error = window.first_error or f"over {spec.max_in_flight} in flight"
                continue
            task = asyncio.create_task(_one(session, spec, due, window))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        unfinished = 0
        if tasks:
            _, pending = await asyncio.wait(set(tasks), timeout=spec.timeout_s + 1.0)
            unfinished = len(pending)
            for task in pending:
                task.cancel()
            if unfinished:
                window.errors += unfinished
                window.first_error = window.first_error or f"{unfinished} requests unanswered"
    return OpenLoopResult(
        due=window.due,
        sent_in_window=window.sent,
        latencies_ms=window.latencies_ms,
        lags_ms=window.lags_ms,
        errors=window.errors,
        dropped=window.dropped,
        unfinished=unfinished,
        first_error=window.first_error,
        window_s=spec.duration_s,
        sent_total=window.sent_total,
    )


def run_open_processes(
    url: str,
    body: bytes,
    *,
    rate: float,
    processes: int,
    duration_s: float,
    warmup_s: float,
    connections: int,
    headers: dict[str, str] | None = None,
) -> list[OpenLoopResult]:
    """Send ``rate`` requests/s to ``url`` from ``processes`` processes that start together, over
    ``connections`` connections in all."""
    start_at = time.time() + _START_DELAY_S
    with contextlib.ExitStack() as stack:
        procs = []
        for index in range(processes):
            own_rate, phase = slot(rate, processes, index)
            spec = OpenLoopSpec(
                url=url,
                body=body,
                rate=own_rate,
                phase_s=phase,
                duration_s=duration_s,
                warmup_s=warmup_s,
                start_at=start_at,
                headers=headers or {},
                connections=max(1, connections // processes),
            )
            procs.append(workers.start(stack, "ollamaflow.bench.openloop_gen", spec))
        return workers.collect(procs, OpenLoopResult, "open-loop generator")


def main() -> None:
    spec = msgspec.json.decode(sys.stdin.buffer.read(), type=OpenLoopSpec)
    raise_nofile(spec.max_in_flight + 64)
    workers.use_uvloop()
    workers.write_result(asyncio.run(run_open(spec)))


if __name__ == "__main__":
    main()
