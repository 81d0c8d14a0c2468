"""The benchmark's figures as a table that fits an 80-column terminal. Pure: builds, never prints."""

from __future__ import annotations

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from ollamaflow.bench.observe_cost import InProcessCost
from ollamaflow.bench.runner import BenchReport, TranslatedRow
from ollamaflow.bench.scenarios import PASS_STREAM, Summary

__all__ = ["render"]

_NOTES = (
    "ratio: req/s via the data plane / req/s direct, same run. "
    "DP ms/req: the data plane's CPU time (user+sys, /proc) per request it served."
)
_TRANSLATED_NOTE = (
    "client→backend API, streamed, via the data plane (no observability); vs pass: req/s over "
    f"{PASS_STREAM.name} via DP in the same round (target: 0.80x or more)."
)
_OBSERVED_NOTE = (
    "DP bare observes nothing; DP+{what} has {what} on. Their cost (the second's req/s and CPU "
    "per request against the first's, same rounds; median round):"
)


def render(report: BenchReport) -> Group:
    table = Table(
        title=f"ollamaflow bench: {report.connections} connections, load: {report.generator}"
        + (f", {report.workers} data-plane workers" if report.workers > 1 else ""),
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for name in ("scenario", "path", "req/s", "p50 ms", "p99 ms", "errors", "ratio", "DP ms/req"):
        table.add_column(name, justify="left" if name in ("scenario", "path") else "right", no_wrap=True)
    observing = any(row.observed is not None for row in report.rows)
    bare = "DP bare" if observing else "via DP"
    for row in report.rows:
        table.add_row(row.scenario, "direct", *_figures(row.direct), "", "")
        table.add_row(
            "",
            bare,
            *_figures(row.through),
            f"{row.rps_ratio:.2f}x",
            f"{row.dataplane_cpu_ms_per_request:.3f}",
        )
        if row.observed is not None:
            direct_ratio = row.observed.rps / row.direct.rps if row.direct.rps else 0.0
            table.add_row(
                "",
                f"DP+{_SHORT[report.observed]}",
                *_figures(row.observed),
                f"{direct_ratio:.2f}x",
                f"{row.observed_cpu_ms_per_request:.3f}",
            )
    errors = [
        f"{row.scenario} {label}: {summary.first_error}"
        for row in report.rows
        for label, summary in (("direct", row.direct), (bare, row.through), ("observed", row.observed))
        if summary is not None and summary.first_error
    ]
    lines = [Text(_NOTES, style="dim")]
    if any(len(row.ratios) > 1 for row in report.rows):
        lines.append(Text(f"median of {len(report.rows[0].ratios)} rounds; ratios by round:", style="dim"))
        lines.extend(
            Text(f"  {row.scenario}: " + ", ".join(f"{r:.2f}x" for r in row.ratios), style="dim")
            for row in report.rows
        )
    if observing:
        lines.append(Text(_OBSERVED_NOTE.format(what=_SHORT[report.observed]), style="dim"))
        lines.extend(
            Text(
                f"  {row.scenario}: {_cost(row.observed_ratio)} req/s, "
                f"{row.observed_cpu_ms_per_request - row.dataplane_cpu_ms_per_request:+.3f} ms CPU/req; "
                "by round: " + ", ".join(_cost(r) for r in row.observed_ratios),
                style="dim",
            )
            for row in report.rows
        )
    for cost in (report.in_process, report.in_process_stream):
        if cost is not None:
            lines.append(Text(_in_process(report, cost), style="dim"))
    parts: list[Table | Text] = [table, *lines]
    if report.translated:
        parts.extend(_translated(report.translated))
    errors += [
        f"{row.scenario}: {row.through.first_error}" for row in report.translated if row.through.first_error
    ]
    parts.extend(Text(f"first error, {e}", style="red") for e in errors)
    return Group(*parts)


def _translated(rows: list[TranslatedRow]) -> list[Table | Text]:
    table = Table(title="translated streams", box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("client→backend", "req/s", "p50 ms", "p99 ms", "errors", "vs pass", "DP ms/req"):
        table.add_column(name, justify="left" if name == "client→backend" else "right", no_wrap=True)
    for row in rows:
        table.add_row(
            row.scenario,
            *_figures(row.through),
            f"{row.stream_ratio:.2f}x",
            f"{row.dataplane_cpu_ms_per_request:.3f}",
        )
    lines: list[Table | Text] = [table, Text(_TRANSLATED_NOTE, style="dim")]
    if any(len(row.ratios) > 1 for row in rows):
        lines.extend(
            Text(f"  {row.scenario} by round: " + ", ".join(f"{r:.2f}x" for r in row.ratios), style="dim")
            for row in rows
        )
    return lines


_SHORT = {"metrics": "metrics", "access-log": "log", "both": "both", "": ""}


def _in_process(report: BenchReport, cost: InProcessCost) -> str:
    """The in-process cost of metrics, and that cost against a whole chat's CPU through DP bare."""
    scenario = "chat stream" if cost.stream else "chat"
    line = (
        f"metrics in process (no server, no socket; median of {cost.blocks} paired blocks of "
        f"{cost.requests_per_block:,} small {'streamed' if cost.stream else 'non-streamed'} chats): "
        f"{cost.added_us:+.1f} µs CPU/req (quartiles {cost.added_q1_us:+.1f} to "
        f"{cost.added_q3_us:+.1f}) over {cost.bare_us:.1f} µs bare"
    )
    row = next((row for row in report.rows if row.scenario == scenario), None)
    if row is not None and row.dataplane_cpu_ms_per_request > 0:
        cpu_ms = row.dataplane_cpu_ms_per_request
        share = cost.added_us / (cpu_ms * 1000) * 100
        line += f"; {share:+.1f}% of {scenario}'s {cpu_ms:.3f} ms CPU/req via DP bare"
    return line


def _cost(ratio: float) -> str:
    """observed/bare req/s as a change: -1.5% is 1.5% fewer requests per second."""
    return f"{(ratio - 1.0) * 100:+.1f}%"


def _figures(summary: Summary) -> tuple[str, str, str, str]:
    return (f"{summary.rps:,.0f}", f"{summary.p50_ms:.2f}", f"{summary.p99_ms:.2f}", str(summary.errors))
