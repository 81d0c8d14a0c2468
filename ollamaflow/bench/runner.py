"""Start a simulator, NATS and a data plane, drive the same load straight and through the data plane,
and report both with their ratio and the data plane's CPU time per request.

A second simulator speaks the OpenAI API only, behind a frontend of its own (picked by the Host
header ``OPENAI_HOST``), so that streamed chat can also be driven through the data plane's
translation both ways (``TRANSLATED``): each such run follows the pass-through stream's run in the
same round and is reported as a fraction of its rate.

With ``observability`` a second data plane runs beside the first: the first with metrics and the
access log off, the second with the metrics, the access log or both on (the access log written at
INFO to its log file, as a deployment writes it), each round driving both in turns (the order
alternating), so that their ratio is the cost of observing, measured in one run on one machine.

The load comes from wrk when it is on PATH (a Python generator cannot saturate the simulator), else
from Python generator processes; the report names which one ran. All of it shares one machine, so
ratios within one run are the figures to compare, not absolute rates across machines.
"""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import msgspec

from ollamaflow.bench.cluster import CLI, free_port, nats, process, publish, wait_ready
from ollamaflow.bench.generators import GeneratorChoice, LoadGenerator, choose
from ollamaflow.bench.observe_cost import InProcessCost
from ollamaflow.bench.observe_cost import measure as measure_in_process
from ollamaflow.bench.procfs import cpu_seconds
from ollamaflow.bench.scenarios import OPENAI_HOST, PASS_STREAM, SCENARIOS, TRANSLATED, Scenario, Summary
from shared.snapshot import BackendView, FrontendView, SnapshotContent

__all__ = ["OBSERVED", "BenchOptions", "BenchReport", "Observed", "Row", "TranslatedRow", "run"]

Observed = Literal["", "metrics", "access-log", "both"]
OBSERVED: tuple[Observed, ...] = ("metrics", "access-log", "both")


@dataclass(frozen=True, slots=True)
class BenchOptions:
    duration_s: float = 5.0
    warmup_s: float = 1.0
    concurrency: int = 32
    nats_url: str | None = None
    generator: GeneratorChoice = "auto"
    # Python generator processes (0 = one per core); wrk runs one thread.
    processes: int = 0
    # Direct and through runs alternate this many times per scenario; the median round is reported.
    rounds: int = 1
    # What a second data plane observes ("metrics", "access-log" or "both"; "" for no second one),
    # the first observing nothing.
    observability: Observed = ""
    # Worker processes of each data plane (ollamaflow dataplane --workers).
    workers: int = 1


class Row(msgspec.Struct, frozen=True, kw_only=True):
    """One scenario: the round with the median ratio, and the ratios of all rounds."""

    scenario: str
    direct: Summary
    through: Summary
    rps_ratio: float
    dataplane_cpu_ms_per_request: float
    ratios: list[float] = []
    # With observability: the same round through the data plane that observes (metrics, the access
    # log or both), its req/s over the bare one's (``through``), and that ratio in every round.
    observed: Summary | None = None
    observed_ratio: float = 0.0
    observed_cpu_ms_per_request: float = 0.0
    observed_ratios: list[float] = []


class TranslatedRow(msgspec.Struct, frozen=True, kw_only=True):
    """A translated stream through the (bare) data plane, in the round with the median ratio.

    ``stream_ratio`` is its req/s over the pass-through stream's through the same data plane in
    the same round (PASS_STREAM's ``through``); ``ratios`` holds that ratio for every round.
    """

    scenario: str
    through: Summary
    stream_ratio: float
    dataplane_cpu_ms_per_request: float
    ratios: list[float] = []


class BenchReport(msgspec.Struct, frozen=True, kw_only=True):
    generator: str  # which load generator ran, e.g. "wrk 4.1.0, 1 thread" or "python/aiohttp, 2 processes"
    observed: Observed = ""  # what the second data plane observed (BenchOptions.observability)
    workers: int = 1  # worker processes of each data plane
    connections: int
    duration_s: float
    rows: list[Row]
    translated: list[TranslatedRow] = []
    # With metrics observed: their cost measured inside one process (ollamaflow.bench.observe_cost),
    # for non-streamed and for streamed chats.
    in_process: InProcessCost | None = None
    in_process_stream: InProcessCost | None = None


# What ``ollamaflow sim`` serves by default, as an OpenAI-compatible server lists it (sorted): the
# data plane needs the list to send "llama3.2" as "llama3.2:latest", the name such a server wants.
_SIM_MODELS = ("all-minilm:latest", "llama3.2:latest", "qwen2.5:0.5b")


def _overhead_content(sim_url: str, openai_sim_url: str = "") -> SnapshotContent:
    """Frontend "bench" (any host) in front of the Ollama simulator and, with ``openai_sim_url``,
    frontend "bench-openai" (Host ``OPENAI_HOST``) in front of the OpenAI-format one."""
    # Limits far above the offered load: this scenario measures the proxy, not admission control.
    unlimited = {"max_parallel_requests": 1_000_000, "rate_limit_requests_threshold": 1_000_000_000}
    backends = [BackendView(id="sim", base_url=sim_url, **unlimited)]  # type: ignore[arg-type]
    frontends = [FrontendView(id="bench", hostname="*", backends=("sim",))]
    if openai_sim_url:
        backends.append(
            BackendView(
                id="sim-openai",
                base_url=openai_sim_url,
                api_format="OpenAI",
                models=_SIM_MODELS,
                models_known=True,
                **unlimited,  # type: ignore[arg-type]
            )
        )
        frontends.append(FrontendView(id="bench-openai", hostname=OPENAI_HOST, backends=("sim-openai",)))
    return SnapshotContent(frontends=tuple(frontends), backends=tuple(backends))


@dataclass(frozen=True, slots=True)
class _Target:
    url: str
    pid: int


def _through(generator: LoadGenerator, scenario: Scenario, target: _Target) -> tuple[Summary, float]:
    """One run through a data plane: its summary and the plane's CPU milliseconds per request."""
    cpu_before = cpu_seconds(target.pid)
    measured = generator.drive(target.url, scenario)
    cpu_used = cpu_seconds(target.pid) - cpu_before
    return measured.summary, cpu_used * 1000.0 / max(1, measured.sent)


def _round(
    generator: LoadGenerator,
    scenario: Scenario,
    sim_url: str,
    bare: _Target,
    observed: _Target | None,
    *,
    observed_first: bool = False,
) -> Row:
    direct = generator.drive(sim_url, scenario).summary
    seen: tuple[Summary, float] | None = None
    if observed is not None and observed_first:
        seen = _through(generator, scenario, observed)
    through, cpu_ms = _through(generator, scenario, bare)
    if observed is not None and seen is None:
        seen = _through(generator, scenario, observed)
    ratio = through.rps / direct.rps if direct.rps else 0.0
    row = Row(
        scenario=scenario.name,
        direct=direct,
        through=through,
        rps_ratio=ratio,
        dataplane_cpu_ms_per_request=cpu_ms,
        ratios=[ratio],
    )
    if seen is None:
        return row
    observed_ratio = seen[0].rps / through.rps if through.rps else 0.0
    return msgspec.structs.replace(
        row,
        observed=seen[0],
        observed_ratio=observed_ratio,
        observed_cpu_ms_per_request=seen[1],
        observed_ratios=[observed_ratio],
    )


def _median_round(rounds: list[Row]) -> Row:
    """The round with the median through/direct ratio (the median observed/bare one with
    observability: that is the figure such a run is for), carrying every round's ratios."""
    observing = rounds[0].observed is not None
    ranked = sorted(rounds, key=lambda row: row.observed_ratio if observing else row.rps_ratio)
    middle = ranked[(len(ranked) - 1) // 2]
    return msgspec.structs.replace(
        middle,
        ratios=[row.rps_ratio for row in rounds],
        observed_ratios=[row.observed_ratio for row in rounds] if observing else [],
    )


def _translated_round(generator: LoadGenerator, bare: _Target, passed: Summary) -> list[TranslatedRow]:
    """Each translated stream through the bare data plane, against ``passed`` (the pass-through
    stream's figures through it in this round)."""
    rows = []
    for scenario in TRANSLATED:
        through, cpu_ms = _through(generator, scenario, bare)
        ratio = through.rps / passed.rps if passed.rps else 0.0
        rows.append(
            TranslatedRow(
                scenario=scenario.name,
                through=through,
                stream_ratio=ratio,
                dataplane_cpu_ms_per_request=cpu_ms,
                ratios=[ratio],
            )
        )
    return rows


def _median_translated(rounds: list[TranslatedRow]) -> TranslatedRow:
    ranked = sorted(rounds, key=lambda row: row.stream_ratio)
    return msgspec.structs.replace(
        ranked[(len(ranked) - 1) // 2], ratios=[row.stream_ratio for row in rounds]
    )


def _observed_dataplane(
    stack: contextlib.ExitStack, env: dict[str, str], tmp: Path, observed: Observed
) -> _Target:
    """A data plane with the metrics, the access log or both on, its INFO log (access lines) in a
    file."""
    port = free_port()
    log = tmp / "dataplane-observed.log"
    observed_env = env | {
        "OLLAMAFLOW_METRICS": str(observed in ("metrics", "both")).lower(),
        "OLLAMAFLOW_ACCESS_LOG": str(observed in ("access-log", "both")).lower(),
        "OLLAMAFLOW_LOG_LEVEL": "INFO",
    }
    argv = [*CLI, "dataplane", "--host", "127.0.0.1", "--port", str(port)]
    child = stack.enter_context(process(argv, log, observed_env))
    url = f"http://127.0.0.1:{port}"
    wait_ready(url + "/readyz", child, log, "data plane (observed)")
    return _Target(url, child.pid)


def run(options: BenchOptions) -> BenchReport:
    generator = choose(
        options.generator,
        connections=options.concurrency,
        duration_s=options.duration_s,
        warmup_s=options.warmup_s,
        processes=options.processes,
    )
    sim_port, openai_port, dp_port = free_port(), free_port(), free_port()
    sim_url, dp_url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{dp_port}"
    openai_url = f"http://127.0.0.1:{openai_port}"
    namespace = "bench" + uuid.uuid4().hex[:8]
    with (
        tempfile.TemporaryDirectory(prefix="ollamaflow-bench-") as tmp,
        nats(options.nats_url, Path(tmp)) as nats_url,
    ):
        content = _overhead_content(sim_url, openai_url)
        trusting = publish(nats_url, namespace, content, Path(tmp) / "keys")
        sim_log, dp_log = Path(tmp) / "sim.log", Path(tmp) / "dataplane.log"
        env = trusting | {
            "OLLAMAFLOW_NATS_URL": nats_url,
            "OLLAMAFLOW_BUS_NAMESPACE": namespace,
            "OLLAMAFLOW_LOG_LEVEL": "WARNING",
            "OLLAMAFLOW_DATAPLANE_WORKERS": str(options.workers),
        }
        if options.observability:
            env |= {"OLLAMAFLOW_METRICS": "false", "OLLAMAFLOW_ACCESS_LOG": "false"}
        with contextlib.ExitStack() as stack:
            sim = stack.enter_context(process([*CLI, "sim", "--port", str(sim_port)], sim_log))
            openai_log = Path(tmp) / "sim-openai.log"
            openai_argv = [*CLI, "sim", "--port", str(openai_port), "--format", "openai"]
            openai_sim = stack.enter_context(process(openai_argv, openai_log))
            dataplane = stack.enter_context(
                process([*CLI, "dataplane", "--host", "127.0.0.1", "--port", str(dp_port)], dp_log, env)
            )
            observed: _Target | None = None
            if options.observability:
                observed = _observed_dataplane(stack, env, Path(tmp), options.observability)
            wait_ready(sim_url + "/api/version", sim, sim_log, "simulator")
            wait_ready(openai_url + "/v1/models", openai_sim, openai_log, "simulator (OpenAI)")
            wait_ready(dp_url + "/readyz", dataplane, dp_log, "data plane")
            bare = _Target(dp_url, dataplane.pid)
            rows: list[Row] = []
            translated_rounds: list[list[TranslatedRow]] = []
            for scenario in SCENARIOS:
                rounds = []
                for index in range(max(1, options.rounds)):
                    row = _round(generator, scenario, sim_url, bare, observed, observed_first=index % 2 == 1)
                    rounds.append(row)
                    if scenario == PASS_STREAM:
                        translated_rounds.append(_translated_round(generator, bare, row.through))
                rows.append(_median_round(rounds))
            translated = [
                _median_translated([by_round[i] for by_round in translated_rounds])
                for i in range(len(TRANSLATED))
            ]
    # After the servers stopped: nothing else runs while it measures.
    in_process = in_process_stream = None
    if options.observability in ("metrics", "both"):
        per_block = max(500, int(options.duration_s * 1_000))
        in_process = measure_in_process(per_block=per_block)
        in_process_stream = measure_in_process(per_block=per_block, stream=True)
    return BenchReport(
        generator=generator.name,
        connections=options.concurrency,
        duration_s=options.duration_s,
        rows=rows,
        observed=options.observability,
        workers=options.workers,
        translated=translated,
        in_process=in_process,
        in_process_stream=in_process_stream,
    )
