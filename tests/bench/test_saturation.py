"""The saturation scenario: its pure parts (limit split, snapshot, aggregation, table) and a short run.

The run checks that the report is sound and complete, never how fast anything is.
"""

from __future__ import annotations

import subprocess
import sys

import msgspec
import pytest
from rich.console import Console

from ollamaflow.bench.loadgen import LoadResult
from ollamaflow.bench.saturation import CLIENTS, SaturationOptions, saturation_content, split
from ollamaflow.bench.saturation_report import (
    SaturationReport,
    SimulatorLoad,
    build_row,
    simulator_load,
)
from ollamaflow.bench.saturation_table import render_saturation


def test_split_is_even_and_sums_to_the_whole() -> None:
    assert split(5, 2) == [3, 2]
    assert split(4, 4) == [1, 1, 1, 1]
    assert split(7, 1) == [7]
    assert sum(split(13, 5)) == 13


def test_snapshot_gives_each_dataplane_a_share_that_sums_to_the_limit() -> None:
    options = SaturationOptions(max_parallel=3, dataplanes=2, backends=2, queue_size=5, queue_timeout_ms=700)
    content = saturation_content(options, ["http://127.0.0.1:1", "http://127.0.0.1:2"], ["a", "b"])
    assert [b.max_parallel_requests for b in content.backends] == [3, 3]
    (frontend,) = content.frontends
    assert frontend.backends == ("sim-1", "sim-2")
    assert (frontend.queue_size, frontend.queue_timeout_ms) == (5, 700)
    views = {dp.id: dp for dp in content.cluster.dataplanes}
    assert set(views) == {"a", "b"}
    for backend in ("sim-1", "sim-2"):
        assert sum(views[dp].shares[backend].max_parallel for dp in views) == 3
        assert all(views[dp].shares[backend].max_parallel >= 1 for dp in views)
        assert all(views[dp].shares[backend].rate_per_second > 0 for dp in views)


def test_a_rate_limit_is_split_too() -> None:
    options = SaturationOptions(max_parallel=2, dataplanes=2, rate_limit=10)
    content = saturation_content(options, ["http://127.0.0.1:1"], ["a", "b"])
    assert content.backends[0].rate_limit_requests_threshold == 10
    assert [dp.shares["sim-1"].rate_per_second for dp in content.cluster.dataplanes] == [5.0, 5.0]


def test_clients_cover_both_formats_unstreamed() -> None:
    assert [(name, path) for name, path, _ in CLIENTS] == [
        ("ollama", "/api/chat"),
        ("openai", "/v1/chat/completions"),
    ]
    assert all(msgspec.json.decode(body).get("stream", False) is False for _, _, body in CLIENTS)


def test_simulator_load_ignores_the_simulators_own_routes() -> None:
    stats = {"peak_concurrent": 3, "by_path": {"/api/chat": 40, "/_sim/reset": 1, "/_sim/stats": 2}}
    assert simulator_load("sim-1", 2, stats) == SimulatorLoad(
        backend="sim-1", limit=2, peak_concurrent=3, requests=40
    )
    assert not simulator_load("sim-1", 2, stats).within_limit
    assert simulator_load("sim-1", 3, stats).within_limit


def test_rows_merge_processes_and_tell_rejections_from_other_errors() -> None:
    first = LoadResult(
        requests=3,
        errors=3,
        elapsed_s=2.0,
        latencies_ms=[100.0, 300.0, 200.0],
        statuses={200: 3, 503: 2, 500: 1},
        queue_waits_ms=[50.0],
        first_error="HTTP 503",
        first_unexpected_error="HTTP 500",
    )
    second = LoadResult(
        requests=1,
        errors=2,
        elapsed_s=2.5,
        latencies_ms=[400.0],
        statuses={200: 1, 429: 1},
        queue_waits_ms=[10.0, 90.0],
        first_error="HTTP 429",
    )
    sims = [SimulatorLoad(backend="sim-1", limit=2, peak_concurrent=2, requests=4)]
    row = build_row("ollama", "/api/chat", [first, second], sims)
    assert row.answered == 4
    assert row.rps == pytest.approx(4 / 2.5)  # the slowest process bounds the window
    assert (row.p50_ms, row.p99_ms, row.max_ms) == (200.0, 400.0, 400.0)
    assert (row.waited, row.queue_p50_ms, row.queue_max_ms) == (3, 50.0, 90.0)
    assert (row.rejected_503, row.rejected_429, row.rejected) == (2, 1, 3)
    assert row.other_errors == 2  # the 500, and a failure that got no status at all
    assert row.first_error == "HTTP 500"
    assert row.statuses == {200: 4, 429: 1, 500: 1, 503: 2}
    assert row.simulators == sims


def _report() -> SaturationReport:
    sims = [
        SimulatorLoad(backend="sim-1", limit=2, peak_concurrent=2, requests=12_345),
        SimulatorLoad(backend="sim-2", limit=2, peak_concurrent=9, requests=12_000),
    ]
    row = build_row(
        "openai",
        "/v1/chat/completions",
        [
            LoadResult(
                requests=2,
                errors=7,
                elapsed_s=1.0,
                latencies_ms=[1234.5, 99.0],
                statuses={200: 2, 429: 5, 502: 1},
                queue_waits_ms=[987.6],
                first_unexpected_error="HTTP 502",
            )
        ],
        sims,
    )
    return SaturationReport(
        generator="python/aiohttp (2 processes)",
        connections=256,
        duration_s=5.0,
        dataplanes=2,
        max_parallel=2,
        rate_limit=50,
        sim_latency_ms=100.0,
        queue_size=8,
        queue_timeout_ms=1000,
        reject_pause_ms=100.0,
        rows=[row, msgspec.structs.replace(row, client="ollama")],
    )


def test_table_fits_80_columns_and_flags_a_peak_over_the_limit() -> None:
    console = Console(width=80, record=True, color_system=None)
    console.print(render_saturation(_report()))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text
    for cell in ("256 clients", "2 DP", "50 req/s", "1234", "988", "12345", "OVER LIMIT", "HTTP 502"):
        assert cell in text
    assert text.count("OVER LIMIT") == 2  # sim-2 in both rows, sim-1 never


def test_report_round_trips_as_json() -> None:
    report = _report()
    assert msgspec.json.decode(msgspec.json.encode(report), type=SaturationReport) == report
    assert report.capacity == 4


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (["--scenario", "storm"], b"--scenario"),
        (["--scenario", "saturation", "--generator", "wrk"], b"--generator"),
    ],
)
def test_bad_options_are_refused(args: list[str], hint: bytes) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ollamaflow.cli", "bench", *args], capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert hint in done.stderr


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_saturation_run_reports_both_clients_and_every_simulator(nats_url: str) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ollamaflow.cli",
            "bench",
            "--scenario",
            "saturation",
            "--duration",
            "1.5",
            "--warmup",
            "0.5",
            "--concurrency",
            "24",
            "--backends",
            "2",
            "--max-parallel",
            "2",
            "--dataplanes",
            "2",
            "--sim-latency-ms",
            "50",
            "--queue-size",
            "2",
            "--queue-timeout-ms",
            "200",
            "--nats-url",
            nats_url,
            "--json",
        ],
        capture_output=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    report = msgspec.json.decode(done.stdout, type=SaturationReport)
    assert (report.connections, report.dataplanes, report.max_parallel, report.queue_size) == (24, 2, 2, 2)
    assert [row.client for row in report.rows] == ["ollama", "openai"]
    ollama, openai = report.rows
    # 24 closed-loop clients against 4 backend slots and 2 x 2 queue places: some must be turned
    # away, each in its client's way, and some must wait.
    assert ollama.rejected_503 > 0 and ollama.rejected_429 == 0
    assert openai.rejected_429 > 0 and openai.rejected_503 == 0
    for row in report.rows:
        assert row.other_errors == 0, row.first_error
        assert row.answered > 0 and row.rps > 0
        assert 0 < row.p50_ms <= row.p90_ms <= row.p99_ms <= row.max_ms
        assert row.waited > 0 and 0 <= row.queue_p50_ms <= row.queue_p99_ms <= row.queue_max_ms
        # Every measured answer is either answered or rejected: nothing else came back.
        assert sum(row.statuses.values()) == row.answered + row.rejected
        assert [sim.backend for sim in row.simulators] == ["sim-1", "sim-2"]
        for sim in row.simulators:
            assert sim.limit == 2
            assert sim.requests > 0
            # The data planes' shares of each backend's limit hold it across both of them.
            assert 1 <= sim.peak_concurrent <= sim.limit, sim
