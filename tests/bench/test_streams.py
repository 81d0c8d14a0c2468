"""The many-streams scenario: its pure parts (timing, descriptors, memory per stream, table) and a
short run. The run checks that the report is sound, never how much memory anything takes."""

from __future__ import annotations

import subprocess
import sys

import msgspec
import pytest
from rich.console import Console

from ollamaflow.bench.streams import (
    ANSWER_TOKENS,
    GENERATOR_SPARE_FILES,
    STREAMS_PER_SIM,
    StreamsReport,
    StreamsResult,
    dataplane_connections,
    dataplane_files,
    generator_files,
    generators_for,
    merge_results,
    most_streams,
    per_stream_kb,
    per_worker,
    plan_streams,
    simulators_for,
    streams_warnings,
)
from ollamaflow.bench.streams_table import render_streams


def test_each_stream_outlasts_the_ramp() -> None:
    plan = plan_streams(10_000, 1000.0, 5.0)
    assert plan.ramp_s == pytest.approx(10.0)
    assert plan.hold_s == pytest.approx(20.0)
    # The last of ANSWER_TOKENS chunks goes out (ANSWER_TOKENS - 1) / tokens_per_second after the first.
    assert (ANSWER_TOKENS - 1) / plan.tokens_per_second == pytest.approx(plan.hold_s)
    assert plan_streams(10, 100.0, 0.0).hold_s == pytest.approx(1.15)  # together for 1 s at least


def test_the_data_plane_needs_two_connections_per_stream() -> None:
    assert dataplane_connections(10_000) > 10_000
    assert dataplane_files(10_000) > 2 * dataplane_connections(10_000)
    for limit in (20_000, 20_001, 65_536):
        assert dataplane_files(most_streams(limit)) <= limit < dataplane_files(most_streams(limit) + 1)
    assert most_streams(10) == 0


def test_workers_each_need_files_for_their_share_only() -> None:
    assert per_worker(10_000) == 10_000
    # The kernel's spread over SO_REUSEPORT sockets is uneven: each worker is planned above its share,
    # by more (relatively) the smaller the share.
    assert 5_000 < per_worker(10_000, 2) <= 5_300
    assert per_worker(10_000, 64) > 156 and per_worker(10_000, 64) / 156.25 > per_worker(10_000, 2) / 5_000
    assert per_worker(3, 4) == 3  # never more than all of them
    assert per_worker(1, 2) == 1
    assert dataplane_files(10_000, 2) < dataplane_files(10_000)
    # One process at the common hard limit cannot hold 10,000 streams; two workers can.
    assert most_streams(20_000) < 10_000 <= most_streams(20_000, 2)
    for workers in (1, 2, 3, 8, 64):
        for limit in (200, 20_000, 65_536):
            most = most_streams(limit, workers)
            assert dataplane_files(most, workers) <= limit < dataplane_files(most + 1, workers)


def test_generators_split_the_client_connections() -> None:
    assert generator_files(10_000, 1) == 10_000 + GENERATOR_SPARE_FILES
    assert generator_files(10_001, 2) == 5_001 + GENERATOR_SPARE_FILES
    assert generator_files(5, 0) == 5 + GENERATOR_SPARE_FILES  # no process count: one
    # The fewest processes whose busiest fits a limit, the inverse of generator_files.
    for streams, limit in ((10_000, 20_000), (20_000, 10_000), (1, 257)):
        fewest = generators_for(streams, limit)
        assert (
            generator_files(streams, fewest) <= limit < generator_files(streams, fewest - 1 or 1)
            or fewest == 1
        )
    assert generators_for(10, GENERATOR_SPARE_FILES) == 0  # no room at all


def test_streams_spread_over_simulators_that_hold_them() -> None:
    assert simulators_for(1) == 1
    assert simulators_for(STREAMS_PER_SIM) == 1
    assert simulators_for(STREAMS_PER_SIM + 1) == 2
    assert simulators_for(10_000) * STREAMS_PER_SIM >= 10_000


def test_memory_per_open_stream() -> None:
    assert per_stream_kb(70_000, 120_000, 2000) == pytest.approx(25.0)
    assert per_stream_kb(70_000, 69_000, 100) == 0.0  # RSS fell: nothing to share out
    assert per_stream_kb(70_000, 80_000, 0) == 0.0


def test_results_merge_over_processes() -> None:
    first = StreamsResult(completed=3, errors=0, first_chunk_ms=[3.0, 1.0, 2.0], opened_s=1.0)
    second = StreamsResult(completed=1, errors=2, first_chunk_ms=[4.0], first_error="HTTP 503", opened_s=1.5)
    assert merge_results([first, second]) == (4, 2, 2.0, 4.0, "HTTP 503", 1.5)


def test_warnings_when_not_all_were_open_or_opening_lagged() -> None:
    plan = plan_streams(1000, 500.0, 2.0)
    assert streams_warnings(plan, 1000, 2.1) == []
    (short,) = streams_warnings(plan, 900, 2.1)
    assert "900 of 1,000" in short
    (slow,) = streams_warnings(plan, 1000, 9.0)
    assert "fell behind" in slow


def test_table_fits_80_columns_uncut() -> None:
    report = StreamsReport(
        generator="python/aiohttp (2 processes)",
        streams=100_000,
        open_rate=12_345.0,
        hold_s=123.4,
        tokens_per_second=0.1,
        completed=99_999,
        errors=1,
        all_completed=False,
        simulators=50,
        peak_open=99_998,
        idle_rss_kb=75_000,
        open_rss_kb=5_075_000,
        per_stream_kb=50.0,
        first_chunk_p50_ms=1234.6,
        first_chunk_p99_ms=12345.6,
        ramp_s=8.1,
        nofile_limit=1_048_576,
        first_error="HTTP 503",
        warnings=["only 99,998 of 100,000 streams were open at once"],
    )
    for workers in (1, 64):
        console = Console(width=80, record=True, color_system=None)
        console.print(render_streams(msgspec.structs.replace(report, workers=workers)))
        text = console.export_text()
        assert max(len(line) for line in text.splitlines()) <= 80
        assert "…" not in text
        for cell in (
            "99,999 of 100,000: NO",
            "50.0 KiB",
            "4,956.1 MiB",
            "1,235 / 12,346 ms",
            "50 simulators",
        ):
            assert cell in text
        assert ("64 workers" in text) == (workers == 64)
        assert ("limit: 1,048,576 each" in text.replace("\n", " ")) == (workers == 64)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_streams_run_holds_them_all_and_reports_memory(nats_url: str, workers: int) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ollamaflow.cli",
            "bench",
            "--scenario",
            "streams",
            "--streams",
            "100",
            "--rate",
            "200",
            "--duration",
            "1",
            "--workers",
            str(workers),
            "--nats-url",
            nats_url,
            "--json",
        ],
        capture_output=True,
        timeout=100,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    report = msgspec.json.decode(done.stdout, type=StreamsReport)
    assert report.streams == 100 and report.workers == workers
    assert report.all_completed and report.completed == 100 and report.errors == 0, report.first_error
    assert report.peak_open == 100, report.warnings
    assert 0 < report.idle_rss_kb <= report.open_rss_kb
    assert report.per_stream_kb >= 0
    assert 0 < report.first_chunk_p50_ms <= report.first_chunk_p99_ms
    assert report.nofile_limit >= dataplane_files(100, workers)
