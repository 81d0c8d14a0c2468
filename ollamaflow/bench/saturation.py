"""The saturation scenario: more load than the backends' limits, through one or more data planes.

Starts slow simulators (a fixed delay before each answer), NATS and N data planes, publishes a
snapshot whose backends have a small MaxParallelRequests (each data plane's share written in it, as
the control plane would), then drives closed-loop chat load well above the backends' combined limit,
once with Ollama's /api/chat and once with OpenAI's /v1/chat/completions. The Python load generator
runs here because it reads each answer's status and X-OllamaFlow-Queue-Ms header.
"""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import msgspec

from ollamaflow.bench.cluster import CLI, free_port, nats, process, publish, wait_ready
from ollamaflow.bench.loadgen import run_processes
from ollamaflow.bench.saturation_report import SaturationReport, SaturationRow, build_row, simulator_load
from shared.snapshot import (
    BackendShare,
    BackendView,
    ClusterView,
    DataPlaneView,
    FrontendView,
    SnapshotContent,
)

__all__ = ["CLIENTS", "SaturationOptions", "run_saturation", "saturation_content", "split"]

# No rate limit asked for: a threshold no benchmark on one machine reaches.
_UNLIMITED_RATE = 1_000_000_000
_MESSAGES = [{"role": "user", "content": "Say hello"}]
# (client format, path, body): non-streamed chat, so every request holds a backend slot for the
# simulator's delay and then frees it.
CLIENTS: tuple[tuple[str, str, bytes], ...] = (
    (
        "ollama",
        "/api/chat",
        msgspec.json.encode({"model": "llama3.2", "messages": _MESSAGES, "stream": False}),
    ),
    ("openai", "/v1/chat/completions", msgspec.json.encode({"model": "llama3.2", "messages": _MESSAGES})),
)


@dataclass(frozen=True, slots=True)
class SaturationOptions:
    duration_s: float = 5.0
    warmup_s: float = 1.0
    concurrency: int = 32  # offered: closed-loop clients, well above backends * max_parallel
    backends: int = 2
    max_parallel: int = 2  # MaxParallelRequests of each backend, cluster-wide
    rate_limit: int = 0  # RateLimitRequestsThreshold (requests/s per backend); 0 = none
    dataplanes: int = 1
    sim_latency_ms: float = 100.0
    queue_size: int = 8  # the frontend's queue, per data plane
    queue_timeout_ms: int = 1000
    reject_pause_ms: float = 100.0
    processes: int = 0  # Python generator processes (0 = one per data plane)
    nats_url: str | None = None


def split(total: int, parts: int) -> list[int]:
    """``total`` in ``parts`` whole shares that differ by at most one and sum to ``total``."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def saturation_content(
    options: SaturationOptions, sim_urls: list[str], dataplane_ids: list[str]
) -> SnapshotContent:
    """One catch-all frontend over the simulators, and each data plane's share of their limits."""
    rate = options.rate_limit or _UNLIMITED_RATE
    backends = tuple(
        BackendView(
            id=f"sim-{i + 1}",
            base_url=url,
            max_parallel_requests=options.max_parallel,
            rate_limit_requests_threshold=rate,
        )
        for i, url in enumerate(sim_urls)
    )
    frontend = FrontendView(
        id="bench",
        hostname="*",
        backends=tuple(b.id for b in backends),
        queue_size=options.queue_size,
        queue_timeout_ms=options.queue_timeout_ms,
    )
    parallel = split(options.max_parallel, len(dataplane_ids))
    views = tuple(
        DataPlaneView(
            id=dp_id,
            shares={
                b.id: BackendShare(max_parallel=parallel[i], rate_per_second=rate / len(dataplane_ids))
                for b in backends
            },
        )
        for i, dp_id in enumerate(dataplane_ids)
    )
    return SnapshotContent(frontends=(frontend,), backends=backends, cluster=ClusterView(dataplanes=views))


def _check(options: SaturationOptions) -> None:
    if options.backends < 1 or options.dataplanes < 1:
        raise RuntimeError("the saturation scenario needs at least one backend and one data plane")
    if options.max_parallel < options.dataplanes:
        # Every data plane needs at least one slot of each backend, or some could never send.
        raise RuntimeError(
            f"--max-parallel ({options.max_parallel}) must be at least --dataplanes ({options.dataplanes})"
        )


@contextlib.contextmanager
def _cluster(options: SaturationOptions, tmp: Path) -> Iterator[tuple[list[str], list[str]]]:
    """Simulators and data planes, running and ready; yields their URLs."""
    namespace = "bench" + uuid.uuid4().hex[:8]
    sim_urls = [f"http://127.0.0.1:{free_port()}" for _ in range(options.backends)]
    dp_ports = [free_port() for _ in range(options.dataplanes)]
    dp_ids = [f"bench-dp-{i + 1}" for i in range(options.dataplanes)]
    with contextlib.ExitStack() as stack:
        nats_url = stack.enter_context(nats(options.nats_url, tmp))
        trusting = publish(nats_url, namespace, saturation_content(options, sim_urls, dp_ids), tmp / "keys")
        env = trusting | {
            "OLLAMAFLOW_NATS_URL": nats_url,
            "OLLAMAFLOW_BUS_NAMESPACE": namespace,
            "OLLAMAFLOW_LOG_LEVEL": "WARNING",
        }
        ready = []
        for i, url in enumerate(sim_urls):
            log = tmp / f"sim-{i + 1}.log"
            args = [*CLI, "sim", "--port", url.rsplit(":", 1)[1], "--latency-ms", str(options.sim_latency_ms)]
            ready.append((url + "/api/version", stack.enter_context(process(args, log)), log, "simulator"))
        for dp_id, port in zip(dp_ids, dp_ports, strict=True):
            log = tmp / f"{dp_id}.log"
            args = [*CLI, "dataplane", "--host", "127.0.0.1", "--port", str(port), "--id", dp_id]
            proc = stack.enter_context(process(args, log, env))
            ready.append((f"http://127.0.0.1:{port}/readyz", proc, log, "data plane"))
        for url, proc, log, what in ready:
            wait_ready(url, proc, log, what)
        yield sim_urls, [f"http://127.0.0.1:{port}" for port in dp_ports]


def _row(
    options: SaturationOptions, client: tuple[str, str, bytes], sims: list[str], dps: list[str]
) -> SaturationRow:
    name, path, body = client
    with httpx.Client(timeout=10) as http:
        for url in sims:  # each row's peaks are its own
            http.post(url + "/_sim/reset").raise_for_status()
        results = run_processes(
            [dp + path for dp in dps],
            body,
            connections=options.concurrency,
            duration_s=options.duration_s,
            warmup_s=options.warmup_s,
            processes=max(options.processes, len(dps)),
            reject_pause_s=options.reject_pause_ms / 1000.0,
        )
        loads = [
            simulator_load(f"sim-{i + 1}", options.max_parallel, http.get(url + "/_sim/stats").json())
            for i, url in enumerate(sims)
        ]
    return build_row(name, path, results, loads)


def run_saturation(options: SaturationOptions) -> SaturationReport:
    _check(options)
    processes = max(options.processes, options.dataplanes)
    with tempfile.TemporaryDirectory(prefix="ollamaflow-bench-") as tmp, _cluster(options, Path(tmp)) as urls:
        sims, dps = urls
        rows = [_row(options, client, sims, dps) for client in CLIENTS]
    return SaturationReport(
        generator=f"python/aiohttp ({processes} process{'es' if processes > 1 else ''})",
        connections=options.concurrency,
        duration_s=options.duration_s,
        dataplanes=options.dataplanes,
        max_parallel=options.max_parallel,
        rate_limit=options.rate_limit,
        sim_latency_ms=options.sim_latency_ms,
        queue_size=options.queue_size,
        queue_timeout_ms=options.queue_timeout_ms,
        reject_pause_ms=options.reject_pause_ms,
        rows=rows,
    )
