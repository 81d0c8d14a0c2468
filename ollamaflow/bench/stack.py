"""One simulator behind one data plane, for the open-loop and many-streams scenarios.

NATS is embedded unless one is given; the snapshot (one frontend for any host, one Ollama backend
with limits far above any offered load) is written straight to the bus, as the overhead run does.
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

__all__ = ["Stack", "sim_and_dataplane", "single_backend"]


@dataclass(frozen=True, slots=True)
class Stack:
    sim_url: str
    dataplane_url: str
    dataplane_pid: int
    sim_pid: int
    workdir: Path


def single_backend(sim_url: str) -> SnapshotContent:
    # Limits far above the offered load: these scenarios measure the proxy, not admission control.
    backend = BackendView(
        id="sim",
        base_url=sim_url,
        max_parallel_requests=1_000_000,
        rate_limit_requests_threshold=1_000_000_000,
    )
    return SnapshotContent(
        frontends=(FrontendView(id="bench", hostname="*", backends=("sim",)),), backends=(backend,)
    )


@contextlib.contextmanager
def sim_and_dataplane(
    nats_url: str | None, sim_args: Sequence[str] = (), dataplane_env: dict[str, str] | None = None
) -> Iterator[Stack]:
    """A simulator started with ``sim_args`` and a data plane (log level WARNING, ``dataplane_env``,
    the rest of its settings from the environment) in front of it, both stopped at the end."""
    sim_port, dp_port = free_port(), free_port()
    sim_url, dp_url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{dp_port}"
    namespace = "bench" + uuid.uuid4().hex[:8]
    with (
        tempfile.TemporaryDirectory(prefix="ollamaflow-bench-") as tmp,
        nats(nats_url, Path(tmp)) as bus_url,
    ):
        workdir = Path(tmp)
        trusting = publish(bus_url, namespace, single_backend(sim_url), workdir / "keys")
        env = (
            trusting
            | {
                "OLLAMAFLOW_NATS_URL": bus_url,
                "OLLAMAFLOW_BUS_NAMESPACE": namespace,
                "OLLAMAFLOW_LOG_LEVEL": "WARNING",
            }
            | (dataplane_env or {})
        )
        sim_log, dp_log = workdir / "sim.log", workdir / "dataplane.log"
        with (
            process([*CLI, "sim", "--port", str(sim_port), *sim_args], sim_log) as sim,
            process([*CLI, "dataplane", "--host", "127.0.0.1", "--port", str(dp_port)], dp_log, env) as dp,
        ):
            wait_ready(sim_url + "/api/version", sim, sim_log, "simulator")
            wait_ready(dp_url + "/readyz", dp, dp_log, "data plane")
            yield Stack(sim_url, dp_url, dp.pid, sim.pid, workdir)
