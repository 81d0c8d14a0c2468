"""The open-loop scenario: its pure parts (schedule, summary, added latency, warnings, table) and a
short run. The run checks that the report is sound, never how fast anything is."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys

import msgspec
import pytest
from aiohttp import web
from rich.console import Console

from ollamaflow.bench.openloop import (
    OpenLoopReport,
    OpenLoopResult,
    OpenLoopSpec,
    OpenLoopSummary,
    added,
    default_processes,
    due_at,
    slot,
    summarise_open,
    warnings,
)
from ollamaflow.bench.openloop_gen import run_open
from ollamaflow.bench.openloop_table import render_open_loop


def test_processes_share_one_evenly_spaced_schedule() -> None:
    rate, processes = 1000.0, 3
    times = sorted(
        due_at(10.0, phase, own, number)
        for index in range(processes)
        for own, phase in [slot(rate, processes, index)]
        for number in range(100)
    )
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) == 300
    assert times[0] == 10.0
    assert all(gap == pytest.approx(1 / rate) for gap in gaps)


def test_default_processes_grow_with_the_rate_up_to_the_cores() -> None:
    assert default_processes(100, 2) == 1
    assert default_processes(1000, 2) == 1
    assert default_processes(2000, 2) == 2
    assert default_processes(50_000, 2) == 2
    assert default_processes(50_000, 0) == 1


def _result(latencies: list[float], **fields: object) -> OpenLoopResult:
    values: dict[str, object] = {
        "due": len(latencies),
        "sent_in_window": len(latencies),
        "latencies_ms": latencies,
        "lags_ms": [0.1] * len(latencies),
        "window_s": 2.0,
    }
    return OpenLoopResult(**(values | fields))  # type: ignore[arg-type]


def test_summary_merges_processes_and_counts_drops_as_errors() -> None:
    first = _result([float(v) for v in range(1, 101)], errors=1, first_error="HTTP 502")
    second = _result([1000.0], dropped=2, lags_ms=[7.0])
    summary = summarise_open([first, second], offered_rps=60.0, duration_s=2.0)
    assert summary.requests == 101
    assert summary.errors == 3
    assert summary.ok_rps == pytest.approx(50.5)
    assert summary.sent_rps == pytest.approx(50.5)
    assert summary.p50_ms == 50.0  # nearest rank of 101 values
    assert summary.max_ms == 1000.0
    assert summary.lag_p99_ms == pytest.approx(0.1)
    assert summary.first_error == "HTTP 502"
    empty = summarise_open([], offered_rps=10.0, duration_s=1.0)
    assert (empty.requests, empty.p99_ms, empty.ok_rps) == (0, 0.0, 0.0)


def _summary(**fields: object) -> OpenLoopSummary:
    values: dict[str, object] = {
        "offered_rps": 1000.0,
        "sent_rps": 1000.0,
        "ok_rps": 1000.0,
        "requests": 5000,
        "errors": 0,
        "p50_ms": 1.25,
        "p90_ms": 2.5,
        "p99_ms": 4.0,
        "max_ms": 12.0,
        "lag_p99_ms": 0.5,
    }
    return OpenLoopSummary(**(values | fields))  # type: ignore[arg-type]


def test_added_latency_is_through_minus_direct() -> None:
    extra = added(_summary(p50_ms=2.0, p99_ms=9.5), _summary(p50_ms=1.25, p99_ms=4.0))
    assert extra.p50_ms == pytest.approx(0.75)
    assert extra.p99_ms == pytest.approx(5.5)


def test_warnings_say_when_the_generator_or_the_target_fell_short() -> None:
    assert warnings("direct", _summary()) == []
    behind = warnings("via DP", _summary(sent_rps=900.0, ok_rps=900.0, errors=3))
    assert len(behind) == 2 and "could not keep the schedule" in behind[0] and "3 errors" in behind[1]
    late = warnings("direct", _summary(lag_p99_ms=20.0))
    assert len(late) == 1 and "20.0 ms late" in late[0]


def test_table_fits_80_columns_uncut() -> None:
    report = OpenLoopReport(
        generator="python/aiohttp open loop (2 processes, 32 connections)",
        scenario="chat",
        offered_rps=12_345.0,
        duration_s=5.0,
        direct=_summary(p99_ms=1234.56, max_ms=98765.4),
        through=_summary(p99_ms=2345.67, max_ms=99999.9, errors=123456),
        added=added(_summary(p99_ms=2345.67), _summary(p99_ms=1234.56)),
        warnings=["via DP: something"],
    )
    for cpu_ms in (0.0, 12.3456):
        console = Console(width=80, record=True, color_system=None)
        console.print(render_open_loop(msgspec.structs.replace(report, dataplane_cpu_ms_per_request=cpu_ms)))
        text = console.export_text()
        assert max(len(line) for line in text.splitlines()) <= 80
        assert "…" not in text
        for cell in ("12,345", "+1,111", "123,456", "98,765", "lag p99", "warning: via DP"):
            assert cell in text
        assert ("data plane CPU: 12.346 ms a request" in text) == bool(cpu_ms)


async def _measure_with_one_stall(stalled_request: int, stall_s: float) -> OpenLoopResult:
    """100 req/s for 1 s over one connection to a server whose ``stalled_request``-th answer
    waits ``stall_s``."""
    seen = 0

    async def chat(request: web.Request) -> web.Response:
        nonlocal seen
        await request.read()
        seen += 1
        if seen == stalled_request:
            await asyncio.sleep(stall_s)
        return web.json_response({"done": True})

    app = web.Application()
    app.router.add_post("/api/chat", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        spec = OpenLoopSpec(
            url=f"http://127.0.0.1:{port}/api/chat",
            body=b"{}",
            rate=100.0,
            duration_s=1.0,
            warmup_s=0.2,
            connections=1,
        )
        return await run_open(spec)
    finally:
        await runner.cleanup()


def test_a_stall_counts_for_every_request_due_during_it() -> None:
    """The open loop's point: one 300 ms stall on the only connection delays the ~30 requests due
    meanwhile, and each one's latency counts from when it was due (a closed loop would show one slow
    request). The sends themselves stay on time."""
    result = asyncio.run(_measure_with_one_stall(stalled_request=60, stall_s=0.3))
    assert result.errors == 0 and result.dropped == 0, result.first_error
    assert 99 <= result.due <= 101 and len(result.latencies_ms) == result.due  # edges: float sums
    assert max(result.latencies_ms) >= 300.0
    assert sum(ms > 100.0 for ms in result.latencies_ms) >= 15
    assert sorted(result.lags_ms)[89] < 100.0  # the generator kept its schedule
    assert 119 <= result.sent_total <= 121  # the 0.2 s of warm-up's 20 requests too: what the target served


@pytest.mark.slow
def test_open_loop_run_reports_both_paths_without_errors(nats_url: str) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ollamaflow.cli",
            "bench",
            "--scenario",
            "open-loop",
            "--rate",
            "100",
            "--duration",
            "1",
            "--warmup",
            "0.3",
            "--nats-url",
            nats_url,
            "--json",
        ],
        capture_output=True,
        timeout=100,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    report = msgspec.json.decode(done.stdout, type=OpenLoopReport)
    assert report.offered_rps == 100.0 and report.generator.startswith("python/aiohttp")
    for summary in (report.direct, report.through):
        assert summary.errors == 0, summary.first_error
        assert summary.requests > 0 and summary.ok_rps > 0 and summary.sent_rps > 0
        assert 0 < summary.p50_ms <= summary.p90_ms <= summary.p99_ms <= summary.max_ms
    assert report.added.p50_ms == pytest.approx(report.through.p50_ms - report.direct.p50_ms)
    assert report.dataplane_cpu_ms_per_request > 0  # read from /proc around the run through it


def test_open_loop_refuses_wrk() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ollamaflow.cli", "bench", "--scenario", "open-loop", "--generator", "wrk"],
        capture_output=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert b"python generator" in done.stderr
