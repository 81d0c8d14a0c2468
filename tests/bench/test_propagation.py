"""`ollamaflow bench --scenario propagation` end to end on a small cluster: it starts its processes,
creates the backends (in a scratch database on a given server), times admin writes and health
changes, and reports sound figures (never how fast anything is)."""

from __future__ import annotations

import subprocess
import sys

import msgspec
import psycopg
import pytest
from sqlalchemy.engine import make_url

from ollamaflow.bench.propagation import Figures, PropagationReport, figures
from ollamaflow.bench.propagation_table import render_propagation
from tests.support.services import fresh_database


def test_figures_are_percentiles_of_the_samples() -> None:
    found = figures([30.0, 10.0, 20.0], skipped=1)
    assert found == Figures(samples=3, skipped=1, p50_ms=20.0, p99_ms=30.0, max_ms=30.0)
    assert figures([], skipped=0).samples == 0


def test_the_table_fits_80_columns() -> None:
    from rich.console import Console

    report = PropagationReport(
        backends=1000,
        frontends=10,
        dataplanes=4,
        snapshot_bytes=950_000,
        admin_write=figures([12.5, 30.1], 0),
        health_change=figures([8.0], 0),
    )
    console = Console(width=80, record=True)
    console.print(render_propagation(report))
    text = console.export_text()
    assert "admin write" in text and "health change" in text
    assert max(len(line) for line in text.splitlines()) <= 80


@pytest.mark.slow
def test_the_propagation_scenario_times_writes_and_health_changes(nats_url: str, database_url: str) -> None:
    with fresh_database(database_url) as url:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "ollamaflow.cli",
                "bench",
                "--scenario",
                "propagation",
                "--backends",
                "20",
                "--dataplanes",
                "2",
                "--sims",
                "1",
                "--samples",
                "3",
                "--health-samples",
                "2",
                "--nats-url",
                nats_url,
                "--database-url",
                url,
                "--json",
            ],
            capture_output=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
        # It worked in a scratch database of its own on that server and dropped it: the given
        # database holds no table, and no scratch database is left.
        libpq = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(libpq) as conn:
            tables = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
            left = conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE 'ollamaflow\\_bench\\_%'"
            ).fetchall()
        assert tables == [] and left == []
    report = msgspec.json.decode(done.stdout, type=PropagationReport)
    assert (report.backends, report.dataplanes, report.frontends) == (20, 2, 1)
    assert report.admin_write.samples + report.admin_write.skipped == 3
    assert report.health_change.samples + report.health_change.skipped == 2
    for measured in (report.admin_write, report.health_change):
        assert measured.samples > 0
        assert 0 < measured.p50_ms <= measured.p99_ms <= measured.max_ms
    assert report.snapshot_bytes > 0
