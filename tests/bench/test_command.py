"""`ollamaflow bench` end to end: it starts its processes, drives both scenarios and the translated
streams, reports figures.

Checks that the run is sound (every scenario, no errors, positive rates and CPU figures), never
how fast anything is.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import msgspec
import pytest

from ollamaflow.bench.runner import BenchReport
from ollamaflow.bench.scenarios import SCENARIOS, TRANSLATED

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("generator", ["python", "wrk"])
def test_bench_reports_both_scenarios_without_errors(nats_url: str, generator: str) -> None:
    if generator == "wrk" and shutil.which("wrk") is None:
        pytest.skip("wrk is not installed")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ollamaflow.cli",
            "bench",
            "--duration",
            "1",
            "--warmup",
            "0.5",
            "--concurrency",
            "8",
            "--generator",
            generator,
            "--nats-url",
            nats_url,
            "--json",
            # One of the two also runs a data plane observing everything (metrics, access log).
            *(["--observability", "both"] if generator == "python" else []),
        ],
        capture_output=True,
        timeout=100,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    report = msgspec.json.decode(done.stdout, type=BenchReport)
    assert report.generator.startswith(generator)
    assert [row.scenario for row in report.rows] == [s.name for s in SCENARIOS]
    for row in report.rows:
        for summary in (row.direct, row.through):
            assert summary.errors == 0, summary.first_error
            assert summary.requests > 0
            assert summary.rps > 0
            assert 0 < summary.p50_ms <= summary.p99_ms
        assert row.rps_ratio > 0
        assert row.dataplane_cpu_ms_per_request > 0
        if generator == "python":
            assert report.observed == "both" and row.observed is not None
            assert row.observed.errors == 0 and row.observed.requests > 0, row.observed.first_error
            assert row.observed_ratio > 0 and row.observed_cpu_ms_per_request > 0
        else:
            assert report.observed == "" and row.observed is None
    if generator == "python":  # metrics observed: their cost measured in process too
        assert report.in_process is not None and report.in_process.requests_per_block == 1_000
        assert report.in_process.bare_us > 0 and report.in_process.observed_us > 0
        assert not report.in_process.stream
        streamed = report.in_process_stream
        assert streamed is not None and streamed.stream and streamed.requests_per_block == 1_000
    else:
        assert report.in_process is None and report.in_process_stream is None
    # Both translations ran, through the bare data plane, against the pass-through stream.
    assert [row.scenario for row in report.translated] == [s.name for s in TRANSLATED]
    for translated in report.translated:
        assert translated.through.errors == 0, translated.through.first_error
        assert translated.through.requests > 0 and translated.through.rps > 0
        assert 0 < translated.through.p50_ms <= translated.through.p99_ms
        assert translated.stream_ratio > 0 and translated.dataplane_cpu_ms_per_request > 0


def test_bench_rejects_an_unknown_generator() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ollamaflow.cli", "bench", "--generator", "ab"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert b"--generator" in done.stderr


def test_bench_through_a_data_plane_of_two_workers(nats_url: str) -> None:
    args = ["--duration", "1", "--warmup", "0.5", "--concurrency", "8", "--generator", "python"]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ollamaflow.cli",
            "bench",
            *args,
            "--workers",
            "2",
            "--nats-url",
            nats_url,
            "--json",
        ],
        capture_output=True,
        timeout=100,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    report = msgspec.json.decode(done.stdout, type=BenchReport)
    assert report.workers == 2
    for row in report.rows:
        assert row.through.errors == 0 and row.through.requests > 0, row.through.first_error
        assert row.dataplane_cpu_ms_per_request > 0


def test_bench_workers_only_where_one_data_plane_is_measured() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ollamaflow.cli", "bench", "--scenario", "saturation", "--workers", "2"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert b"--workers" in done.stderr
    assert b"streams" in done.stderr  # where it applies is said
