"""The saturation report as tables that fit an 80-column terminal. Pure: builds, never prints."""

from __future__ import annotations

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from ollamaflow.bench.saturation_report import SaturationReport

__all__ = ["render_saturation"]

_NOTES = (
    "p50/p90/p99: latency of the answered requests, queue wait included. queued: answers that waited "
    "in a data plane's queue (X-OllamaFlow-Queue-Ms), q p50/p99: their wait. 503/429: requests turned away "
    "(Ollama/OpenAI). peak: most requests a simulator answered at once (/_sim/stats), warm-up included."
)


def _ms(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def render_saturation(report: SaturationReport) -> Group:
    rate = f", {report.rate_limit} req/s" if report.rate_limit else ""
    title = (
        f"saturation: {report.connections} clients -> {report.dataplanes} DP -> "
        f"{len(report.rows[0].simulators) if report.rows else 0} sims x {report.max_parallel} parallel{rate}"
    )
    clients = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("client", "ok/s", "p50", "p90", "p99", "queued", "q p50", "q p99", "503", "429", "err"):
        clients.add_column(name, justify="left" if name == "client" else "right", no_wrap=True)
    for row in report.rows:
        clients.add_row(
            row.client,
            f"{row.rps:,.1f}",
            _ms(row.p50_ms),
            _ms(row.p90_ms),
            _ms(row.p99_ms),
            str(row.waited),
            _ms(row.queue_p50_ms),
            _ms(row.queue_p99_ms),
            str(row.rejected_503),
            str(row.rejected_429),
            str(row.other_errors),
        )
    sims = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("client", "backend", "limit", "peak", "requests", ""):
        sims.add_column(name, justify="left" if name in ("client", "backend", "") else "right", no_wrap=True)
    for row in report.rows:
        for i, sim in enumerate(row.simulators):
            verdict = Text("ok") if sim.within_limit else Text("OVER LIMIT", style="red")
            sims.add_row(
                row.client if i == 0 else "",
                sim.backend,
                str(sim.limit),
                str(sim.peak_concurrent),
                str(sim.requests),
                verdict,
            )
    setup = (
        f"load: {report.generator}, {report.duration_s:g} s per client; simulators answer after "
        f"{report.sim_latency_ms:g} ms; queue {report.queue_size} per data plane, wait at most "
        f"{report.queue_timeout_ms} ms; a rejected client pauses {report.reject_pause_ms:g} ms. Times in ms."
    )
    lines = [Text(setup, style="dim"), Text(_NOTES, style="dim")]
    lines.extend(
        Text(f"first other error, {row.client}: {row.first_error}", style="red")
        for row in report.rows
        if row.first_error
    )
    return Group(clients, sims, *lines)
