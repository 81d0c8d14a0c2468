"""`ollamaflow bench`: proxy overhead as ratios within one run, latency added at a fixed rate,
memory per open stream, behaviour under saturation, or how fast changes propagate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

SCENARIO_NAMES = ("overhead", "open-loop", "streams", "saturation", "propagation")


def bench(
    scenario: Annotated[
        str,
        typer.Option(
            help="overhead: the same load direct and through a data plane, and translated streams. "
            "open-loop: a fixed --rate direct and through, and the latency the data plane adds. "
            "streams: --streams slow streams held open, and the data plane's memory per stream. "
            "saturation: more load than "
            "the backends' limits, reporting queue wait, rejections and each simulator's peak concurrency. "
            "propagation: how long admin writes and health changes take to be applied on every data plane."
        ),
    ] = "overhead",
    duration: Annotated[
        float,
        typer.Option(
            help="Seconds of measured load per scenario and path (wrk: whole seconds). streams: seconds "
            "all streams are open together."
        ),
    ] = 5.0,
    warmup: Annotated[
        float,
        typer.Option(
            help="Seconds of unmeasured load before each measurement (streams: a fixed warm-up of 32 "
            "fast streams instead)."
        ),
    ] = 1.0,
    concurrency: Annotated[
        int,
        typer.Option(
            min=1,
            help="Concurrent client connections (open-loop: the most it holds; a request due while "
            "all are busy waits for one, in its latency).",
        ),
    ] = 32,
    generator: Annotated[
        str,
        typer.Option(
            help="Load generator: wrk, python (aiohttp processes), or auto (wrk when it is on PATH). "
            "saturation always uses python (it reads each answer's status and headers), and so do open-loop "
            "(sends on a schedule) and streams."
        ),
    ] = "auto",
    processes: Annotated[
        int,
        typer.Option(
            min=0,
            help="Processes of the python generator (0: one per core; saturation: per DP; open-loop: "
            "one per 1,500 req/s; streams: one per 1,000 streams opened/s; both at most one per core).",
        ),
    ] = 0,
    rate: Annotated[
        float | None,
        typer.Option(
            min=0.001,
            help="open-loop: requests/s offered, on a schedule, at most 50,000 [1000]. streams: streams "
            "opened per second [400].",
        ),
    ] = None,
    streams: Annotated[
        int, typer.Option(min=1, max=100_000, help="streams: slow streams held open at once.")
    ] = 2000,
    rounds: Annotated[
        int,
        typer.Option(
            min=1, help="Alternate direct and through runs this often per scenario; show the median round."
        ),
    ] = 1,
    backends: Annotated[
        int | None,
        typer.Option(min=1, help="saturation: simulated backends [2]. propagation: backends [1000]."),
    ] = None,
    max_parallel: Annotated[
        int, typer.Option(min=1, help="saturation: MaxParallelRequests of each backend (cluster-wide).")
    ] = 2,
    rate_limit: Annotated[
        int,
        typer.Option(min=0, help="saturation: RateLimitRequestsThreshold, requests/s per backend (0: none)."),
    ] = 0,
    dataplanes: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="saturation: data planes sharing the limits, clients spread over them [1]. "
            "propagation: data planes that must all apply each change [4].",
        ),
    ] = None,
    samples: Annotated[int, typer.Option(min=1, help="propagation: admin writes timed.")] = 50,
    health_samples: Annotated[
        int, typer.Option(min=0, help="propagation: health changes timed (one backend down, up, ...).")
    ] = 20,
    sims: Annotated[
        int, typer.Option(min=1, help="propagation: simulator processes the backends are spread over.")
    ] = 4,
    health_interval: Annotated[
        float, typer.Option(min=0.1, help="propagation: the control plane's probe interval, seconds.")
    ] = 5.0,
    logs: Annotated[
        Path | None,
        typer.Option(
            help="propagation: keep every process's log (INFO) in this directory; show each sample."
        ),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            help=(
                "propagation: use this PostgreSQL server (in a scratch database of its own, dropped "
                "after) instead of starting an embedded one."
            )
        ),
    ] = None,
    sim_latency_ms: Annotated[
        float, typer.Option(min=0, help="saturation: each simulator's delay before it answers.")
    ] = 100.0,
    queue_size: Annotated[
        int, typer.Option(min=0, help="saturation: the frontend's queue size per data plane (0: none).")
    ] = 8,
    queue_timeout_ms: Annotated[
        int, typer.Option(min=1, help="saturation: the longest a request may wait in that queue.")
    ] = 1000,
    reject_pause_ms: Annotated[
        float, typer.Option(min=0, help="saturation: a client's pause after a 503/429 before it retries.")
    ] = 100.0,
    nats_url: Annotated[
        str | None, typer.Option(help="Use this NATS server instead of starting an embedded one.")
    ] = None,
    observability: Annotated[
        str | None,
        typer.Option(
            help="overhead: also run a second data plane with metrics, access-log or both on (the "
            "first has both off) and report what that costs, both driven in every round; with metrics, "
            "also their cost measured in one process, without server or sockets."
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="overhead, open-loop, streams: worker processes of the data plane (ollamaflow "
            "dataplane --workers); its CPU time and memory count them all. streams: each worker holds "
            "about its share of the streams within its own open-files limit.",
        ),
    ] = 1,
    json_output: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """Benchmark the data plane against simulators it fronts.

    --scenario overhead (the default) starts a simulator, NATS (embedded unless --nats-url) and one
    data plane, then drives the same closed-loop load straight at the simulator and through the data
    plane, for non-streamed and streamed chat. The load comes from wrk when it is installed, else from
    Python load-generator processes; the output names which. Prints requests/s, p50/p99 latency,
    errors, the through/direct ratio and the data plane's CPU time per request. All processes share
    this machine's cores, so compare ratios, not absolute figures, across machines; on a busy machine,
    --rounds 3 reports the median of three alternating rounds. --observability metrics|access-log|both
    adds a data plane observing that beside one observing nothing, and reports what it costs; with
    metrics (or both) it then measures the metrics' CPU per request inside one process, two data
    planes over an in-memory bus in alternating blocks of non-streamed and then of streamed chats, a
    figure the requests/s of a shared machine cannot show.

    Each overhead round also drives streamed chat through the data plane's translation, both ways: an
    Ollama client (/api/chat) whose frontend holds an OpenAI-format simulator, and an OpenAI client
    (/v1/chat/completions) in front of the Ollama one; each is shown as a fraction of the pass-through
    stream's requests/s in the same round.

    --scenario open-loop sends non-streamed chat at a fixed --rate on a schedule, whatever the answers
    do, straight at a simulator and then through a data plane, measuring each latency from the time
    the request was due (so queueing shows, unlike in a closed loop). Prints the rate sent and
    answered, p50/p90/p99/max latency, the generator's own lateness and errors, the p50/p99 the data
    plane adds, and the data plane's CPU time per request at that rate; warns when the generator could
    not keep the schedule.

    --scenario streams opens --streams slow streamed chats (--rate per second) through one data plane
    and holds them all open for --duration seconds. Prints whether every stream completed, how many
    were open at once, and the data plane's RSS idle and with them open, and per open stream. It
    raises the open-files limit for the processes it starts (about 2 per stream in the data plane);
    with --workers, each worker process needs that for its share of the streams only.

    --scenario saturation starts --backends simulators that answer after --sim-latency-ms, and
    --dataplanes data planes in front of them with a small --max-parallel per backend, then offers
    --concurrency clients (well above backends x max-parallel), once as Ollama clients (/api/chat)
    and once as OpenAI clients (/v1/chat/completions). Prints answered requests/s, latency
    percentiles, how many answers waited in the queue and for how long, the requests turned away
    (503 for Ollama clients, 429 for OpenAI clients), other errors, and each simulator's peak
    concurrency beside its limit.

    --scenario propagation starts NATS and PostgreSQL (embedded unless --nats-url / --database-url),
    --sims simulators, a control plane probing every backend and --dataplanes data planes, creates
    --backends backends through the admin API (in frontends of 100), then times, one at a time on a
    quiet cluster, --samples admin writes (PATCH of a backend's Name: from the request until every data
    plane reported applying a revision holding it) and --health-samples health changes of one backend
    (from the moment the control plane recorded the change until every data plane applied it). Prints
    p50/p99/max of each and the snapshot's size.
    """
    if scenario not in SCENARIO_NAMES:
        raise typer.BadParameter(
            "must be " + ", ".join(SCENARIO_NAMES[:-1]) + " or propagation", param_hint="--scenario"
        )
    if observability is not None and observability not in ("metrics", "access-log", "both"):
        raise typer.BadParameter("must be metrics, access-log or both", param_hint="--observability")
    if workers > 1 and scenario not in ("overhead", "open-loop", "streams"):
        raise typer.BadParameter(
            "applies to the overhead, open-loop and streams scenarios", param_hint="--workers"
        )
    if generator not in ("auto", "wrk", "python"):
        raise typer.BadParameter("must be auto, wrk or python", param_hint="--generator")
    if scenario in ("saturation", "open-loop", "streams") and generator == "wrk":
        raise typer.BadParameter(
            f"the {scenario} scenario runs the python generator", param_hint="--generator"
        )

    import msgspec
    from rich.console import Console

    report: msgspec.Struct
    try:
        if scenario == "propagation":
            from ollamaflow.bench.propagation import PropagationOptions
            from ollamaflow.bench.propagation_run import run_propagation
            from ollamaflow.bench.propagation_table import render_propagation

            report = run_propagation(
                PropagationOptions(
                    backends=backends or 1000,
                    dataplanes=dataplanes or 4,
                    samples=samples,
                    health_samples=health_samples,
                    sims=sims,
                    health_interval=health_interval,
                    nats_url=nats_url,
                    database_url=database_url,
                    logs=logs,
                )
            )
            shown = render_propagation(report)
        elif scenario == "open-loop":
            from ollamaflow.bench.openloop_run import OpenLoopOptions, run_open_loop
            from ollamaflow.bench.openloop_table import render_open_loop

            report = run_open_loop(
                OpenLoopOptions(
                    rate=rate or 1000.0,
                    duration_s=duration,
                    warmup_s=warmup,
                    connections=concurrency,
                    processes=processes,
                    nats_url=nats_url,
                    workers=workers,
                )
            )
            shown = render_open_loop(report)
        elif scenario == "streams":
            from ollamaflow.bench.streams_run import StreamsOptions, run_streams_scenario
            from ollamaflow.bench.streams_table import render_streams

            report = run_streams_scenario(
                StreamsOptions(
                    streams=streams,
                    open_rate=rate or 400.0,
                    duration_s=duration,
                    processes=processes,
                    nats_url=nats_url,
                    workers=workers,
                )
            )
            shown = render_streams(report)
        elif scenario == "saturation":
            from ollamaflow.bench.saturation import SaturationOptions, run_saturation
            from ollamaflow.bench.saturation_table import render_saturation

            report = run_saturation(
                SaturationOptions(
                    duration_s=duration,
                    warmup_s=warmup,
                    concurrency=concurrency,
                    backends=backends or 2,
                    max_parallel=max_parallel,
                    rate_limit=rate_limit,
                    dataplanes=dataplanes or 1,
                    sim_latency_ms=sim_latency_ms,
                    queue_size=queue_size,
                    queue_timeout_ms=queue_timeout_ms,
                    reject_pause_ms=reject_pause_ms,
                    processes=processes,
                    nats_url=nats_url,
                )
            )
            shown = render_saturation(report)
        else:
            from ollamaflow.bench.runner import BenchOptions, run
            from ollamaflow.bench.table import render

            report = run(
                BenchOptions(
                    duration_s=duration,
                    warmup_s=warmup,
                    concurrency=concurrency,
                    nats_url=nats_url,
                    generator=generator,  # type: ignore[arg-type]
                    processes=processes,
                    rounds=rounds,
                    observability=observability or "",  # type: ignore[arg-type]
                    workers=workers,
                )
            )
            shown = render(report)
    except RuntimeError as exc:
        raise SystemExit(f"ollamaflow bench: {exc}") from exc
    if json_output:
        typer.echo(msgspec.json.format(msgspec.json.encode(report)).decode())
        return
    Console().print(shown)
