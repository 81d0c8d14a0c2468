"""The many-streams figures as a table that fits an 80-column terminal. Pure: builds, never prints."""

from __future__ import annotations

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from ollamaflow.bench.streams import StreamsReport, dataplane_connections, dataplane_files

__all__ = ["render_streams"]


def _sims(count: int) -> str:
    return "the simulator" if count == 1 else f"{count} simulators"


def render_streams(report: StreamsReport) -> Group:
    workers = f" ({report.workers} workers)" if report.workers > 1 else ""
    table = Table(
        title=f"ollamaflow bench: {report.streams:,} streams through one data plane{workers}",
        caption=f"{report.generator}, {report.open_rate:,.0f} opened/s, {report.hold_s:.1f} s each",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("figure", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    done = "yes" if report.all_completed else "NO"
    rows = (
        ("completed (final chunk read)", f"{report.completed:,} of {report.streams:,}: {done}"),
        ("errors", f"{report.errors:,}"),
        (f"open at once (at {_sims(report.simulators)})", f"{report.peak_open:,}"),
        ("data plane RSS idle", f"{report.idle_rss_kb / 1024:,.1f} MiB"),
        ("data plane RSS, streams open (max)", f"{report.open_rss_kb / 1024:,.1f} MiB"),
        ("per open stream (goal <= 50 KB)", f"{report.per_stream_kb:,.1f} KiB"),
        ("first chunk p50 / p99", f"{report.first_chunk_p50_ms:,.0f} / {report.first_chunk_p99_ms:,.0f} ms"),
        ("all opened after", f"{report.ramp_s:.1f} s"),
    )
    for name, value in rows:
        table.add_row(name, value)
    need = dataplane_connections(report.streams, report.workers)
    files = dataplane_files(report.streams, report.workers)
    many = report.workers > 1
    who = (
        f"RSS is the sum over the data plane's parent and {report.workers} workers. Each worker ran"
        if many
        else "The data plane ran"
    )
    ran = (
        f"{who} with OLLAMAFLOW_CLIENT_MAX_CONNECTIONS and OLLAMAFLOW_UPSTREAM_MAX_CONNECTIONS at {need:,} "
        f"and needs about {files:,} open files (limit: {report.nofile_limit:,}{' each' if many else ''})."
    )
    lines = [Text(f"per open stream: (RSS with them open - RSS idle) / open at once. {ran}", style="dim")]
    lines.extend(Text(f"warning: {w}", style="yellow") for w in report.warnings)
    if report.first_error:
        lines.append(Text(f"first error: {report.first_error}", style="red"))
    return Group(table, *lines)
