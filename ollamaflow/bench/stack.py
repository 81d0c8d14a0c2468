"""Simulators behind one data plane, for the open-loop and many-streams scenarios.

NATS is embedded unless one is given; the snapshot (one frontend for any host, round robin over
Ollama backends with limits far above any offered load) is written straight to the bus, as the
overhead run does.
"""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ollamaflow.bench.cluster import CLI, free_port, nats, process, publish, wait_ready
from shared.snapshot import BackendView, FrontendView, SnapshotContent

__all__ = ["Stack", "sim_and_dataplane", "simulators_backend"]


@dataclass(frozen=True, slots=True)
class Stack:
    sim_urls: tuple[str, ...]
    dataplane_url: str
    dataplane_pid: int
    workdir: Path

    @property
    def sim_url(self) -> str:
        return self.sim_urls[0]


def simulators_backend(sim_urls: Sequence[str]) -> SnapshotContent:
    # Limits far above the offered load: these scenarios measure the proxy, not admission control.
    backends = tuple(
        BackendView(
            id=f"sim-{index}",
            base_url=url,
            max_parallel_requests=1_000_000,
            rate_limit_requests_threshold=1_000_000_000,
        )
        for index, url in enumerate(sim_urls, 1)
    )
    frontend = FrontendView(id="bench", hostname="*", backends=tuple(b.id for b in backends))
    return SnapshotContent(frontends=(frontend,), backends=backends)


@contextlib.contextmanager
def sim_and_dataplane(
    nats_url: str | None,
    sim_args: Sequence[str] = (),
    dataplane_env: dict[str, str] | None = None,
    *,
    sims: int = 1,
) -> Iterator[Stack]:
    """``sims`` simulators started with ``sim_args`` and a data plane (log level WARNING,
    ``dataplane_env``, the rest of its settings from the environment) in front of them, all stopped
    at the end of the block."""
    sim_ports, dp_port = [free_port() for _ in range(sims)], free_port()
    sim_urls = tuple(f"http://127.0.0.1:{port}" for port in sim_ports)
    dp_url = f"http://127.0.0.1:{dp_port}"
    namespace = "bench" + uuid.uuid4().hex[:8]
    with (
        tempfile.TemporaryDirectory(prefix="ollamaflow-bench-") as tmp,
        nats(nats_url, Path(tmp)) as bus_url,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(tmp)
        trusting = publish(bus_url, namespace, simulators_backend(sim_urls), workdir / "keys")
        env = (
            trusting
            | {
                "OLLAMAFLOW_NATS_URL": bus_url,
                "OLLAMAFLOW_BUS_NAMESPACE": namespace,
                "OLLAMAFLOW_LOG_LEVEL": "WARNING",
            }
            | (dataplane_env or {})
        )
        started = []
        for index, port in enumerate(sim_ports, 1):
            log = workdir / f"sim-{index}.log"
            started.append(
                (stack.enter_context(process([*CLI, "sim", "--port", str(port), *sim_args], log)), log)
            )
        dp_log = workdir / "dataplane.log"
        argv = [*CLI, "dataplane", "--host", "127.0.0.1", "--port", str(dp_port)]
        dp = stack.enter_context(process(argv, dp_log, env))
        for (sim, log), url in zip(started, sim_urls, strict=True):
            wait_ready(url + "/api/version", sim, log, "simulator")
        wait_ready(dp_url + "/readyz", dp, dp_log, "data plane")
        yield Stack(sim_urls, dp_url, dp.pid, workdir)
