"""The propagation report as a table that fits an 80-column terminal. Pure: builds, never prints."""

from __future__ import annotations

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from ollamaflow.bench.propagation import Figures, PropagationReport

__all__ = ["render_propagation"]

_NOTES = (
    "admin write: from the PATCH request until the last data plane reported applying the revision that "
    "holds it. health change: from the moment the control plane recorded it until the same. skipped: "
    "changes whose first revision was no longer in the key's history."
)


def _row(table: Table, name: str, figures: Figures) -> None:
    table.add_row(
        name,
        str(figures.samples),
        f"{figures.p50_ms:.1f}",
        f"{figures.p99_ms:.1f}",
        f"{figures.max_ms:.1f}",
        str(figures.skipped),
    )


def render_propagation(report: PropagationReport) -> Group:
    title = (
        f"propagation: {report.backends:,} backends, {report.frontends:,} frontends, "
        f"{report.dataplanes} DP, snapshot {report.snapshot_bytes / 1e6:.2f} MB"
    )
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("change", "n", "p50 ms", "p99 ms", "max ms", "skipped"):
        table.add_column(name, justify="left" if name == "change" else "right", no_wrap=True)
    _row(table, "admin write", report.admin_write)
    _row(table, "health change", report.health_change)
    return Group(table, Text(_NOTES, style="dim"))
