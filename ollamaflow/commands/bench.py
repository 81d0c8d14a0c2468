"""`ollamaflow bench`: proxy overhead, measured as ratios within one run."""

from __future__ import annotations

from typing import Annotated

import typer


def bench(
    duration: Annotated[
        float, typer.Option(help="Seconds of measured load per scenario and path (wrk: whole seconds).")
    ] = 5.0,
    warmup: Annotated[float, typer.Option(help="Seconds of unmeasured load before each measurement.")] = 1.0,
    concurrency: Annotated[int, typer.Option(min=1, help="Concurrent client connections.")] = 32,
    generator: Annotated[
        str,
        typer.Option(
            help="Load generator: wrk, python (aiohttp processes), or auto (wrk when it is on PATH)."
        ),
    ] = "auto",
    processes: Annotated[
        int, typer.Option(min=0, help="Processes of the python generator (0: one per core).")
    ] = 0,
    rounds: Annotated[
        int,
        typer.Option(
            min=1, help="Alternate direct and through runs this often per scenario; show the median round."
        ),
    ] = 1,
    nats_url: Annotated[
        str | None, typer.Option(help="Use this NATS server instead of starting an embedded one.")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """Benchmark the data plane against the simulator it fronts.

    Starts a simulator, NATS (embedded unless --nats-url) and one data plane, then drives the same
    closed-loop load straight at the simulator and through the data plane, for non-streamed and
    streamed chat. The load comes from wrk when it is installed, else from Python load-generator
    processes; the output names which. Prints requests/s, p50/p99 latency, errors, the
    through/direct ratio and the data plane's CPU time per request. All processes share this
    machine's cores, so compare ratios, not absolute figures, across machines; on a busy machine,
    --rounds 3 reports the median of three alternating rounds.
    """
    if generator not in ("auto", "wrk", "python"):
        raise typer.BadParameter("must be auto, wrk or python", param_hint="--generator")

    import msgspec
    from rich.console import Console

    from ollamaflow.bench.runner import BenchOptions, run
    from ollamaflow.bench.table import render

    options = BenchOptions(
        duration_s=duration,
        warmup_s=warmup,
        concurrency=concurrency,
        nats_url=nats_url,
        generator=generator,  # type: ignore[arg-type]
        processes=processes,
        rounds=rounds,
    )
    try:
        report = run(options)
    except RuntimeError as exc:
        raise SystemExit(f"ollamaflow bench: {exc}") from exc
    if json_output:
        typer.echo(msgspec.json.format(msgspec.json.encode(report)).decode())
        return
    Console().print(render(report))
