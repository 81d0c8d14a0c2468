"""The open-loop figures as a table that fits an 80-column terminal. Pure: builds, never prints."""

from __future__ import annotations

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from ollamaflow.bench.openloop import OpenLoopReport, OpenLoopSummary

__all__ = ["render_open_loop"]

_NOTES = (
    "Open loop: requests sent on a fixed schedule whatever the answers do; latency from the time "
    "each was due, so queueing shows. sent: what the generator really sent; lag p99: its own "
    "lateness. added: via DP minus direct (goal at 1,000 req/s: p50 <= 1 ms, p99 <= 5 ms)."
)


def render_open_loop(report: OpenLoopReport) -> Group:
    table = Table(
        title=f"ollamaflow bench: open loop, {report.offered_rps:,.0f} req/s offered, {report.scenario}"
        + (f", {report.workers} data-plane workers" if report.workers > 1 else ""),
        caption=f"latency in ms; {report.generator}, {report.duration_s:g} s",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for name in ("path", "sent/s", "ok/s", "p50", "p90", "p99", "max", "lag p99", "errors"):
        table.add_column(name, justify="left" if name == "path" else "right", no_wrap=True)
    table.add_row("direct", *_figures(report.direct))
    table.add_row("via DP", *_figures(report.through))
    extra = report.added
    table.add_row(
        "added", "", "", _ms(extra.p50_ms, "+"), "", _ms(extra.p99_ms, "+"), "", "", "", style="bold"
    )
    lines = [Text(_NOTES, style="dim")]
    if report.dataplane_cpu_ms_per_request:
        lines.append(
            Text(
                f"data plane CPU: {report.dataplane_cpu_ms_per_request:.3f} ms a request (user + system, "
                "all its processes, over every request sent through it, warm-up included)"
            )
        )
    lines.extend(Text(f"warning: {w}", style="yellow") for w in report.warnings)
    lines.extend(
        Text(f"first error, {label}: {s.first_error}", style="red")
        for label, s in (("direct", report.direct), ("via DP", report.through))
        if s.first_error
    )
    return Group(table, *lines)


def _ms(value: float, sign: str = "") -> str:
    """Milliseconds in at most about six characters: fewer decimals as they grow."""
    if abs(value) < 100:
        return f"{value:{sign}.2f}"
    if abs(value) < 1000:
        return f"{value:{sign}.1f}"
    return f"{value:{sign},.0f}"


def _figures(s: OpenLoopSummary) -> tuple[str, ...]:
    return (
        f"{s.sent_rps:,.0f}",
        f"{s.ok_rps:,.0f}",
        *(_ms(v) for v in (s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms, s.lag_p99_ms)),
        f"{s.errors:,}",
    )
