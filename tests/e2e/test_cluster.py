"""The whole cluster as separate processes: a control plane, two data planes and two simulated backends.

Configuration goes in through the admin API only; answers come out through the data planes to the
official ollama client.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import ollama
import pytest

from tests.support.processes import free_port, ollamaflow, wait_ready
from tests.support.services import fresh_database
from tests.support.signing import SnapshotKeys

pytestmark = pytest.mark.slow

TOKEN = "e2e-admin-token"


@dataclass
class Cluster:
    admin: httpx.Client
    dataplanes: list[str]
    sims: list[str]
    sim_processes: list[subprocess.Popen[bytes]]
    logs: Path


@pytest.fixture
def cluster(
    tmp_path: Path, database_url: str, nats_url: str, bus_namespace: str, snapshot_keys: SnapshotKeys
) -> Iterator[Cluster]:
    stack = ExitStack()
    env = snapshot_keys.env() | {
        "OLLAMAFLOW_DATABASE_URL": stack.enter_context(fresh_database(database_url)),
        "OLLAMAFLOW_NATS_URL": nats_url,
        "OLLAMAFLOW_BUS_NAMESPACE": bus_namespace,
        "OLLAMAFLOW_ADMIN_TOKENS": TOKEN,
        "OLLAMAFLOW_REPORT_INTERVAL": "0.5",
        "OLLAMAFLOW_HEALTH_INTERVAL": "0.5",
        "OLLAMAFLOW_HEALTH_TIMEOUT": "0.5",
    }
    with stack:
        sims = []
        for i in range(2):
            port = free_port()
            proc = stack.enter_context(ollamaflow(["sim", "--port", str(port)], tmp_path / f"sim{i}.log"))
            sims.append((f"http://127.0.0.1:{port}", proc, tmp_path / f"sim{i}.log"))
        cp_port = free_port()
        cp = stack.enter_context(
            ollamaflow(["controlplane", "--port", str(cp_port)], tmp_path / "cp.log", env)
        )
        dataplanes = []
        for i in range(2):
            port = free_port()
            log = tmp_path / f"dp{i}.log"
            args = ["dataplane", "--host", "127.0.0.1", "--port", str(port), "--id", f"dp{i}"]
            proc = stack.enter_context(ollamaflow(args, log, env))
            dataplanes.append((f"http://127.0.0.1:{port}", proc, log))
        for url, proc, log in sims:
            wait_ready(url + "/api/version", proc, log)
        cp_url = f"http://127.0.0.1:{cp_port}"
        wait_ready(cp_url + "/readyz", cp, tmp_path / "cp.log", timeout=60)
        admin = stack.enter_context(
            httpx.Client(base_url=cp_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        )
        yield Cluster(
            admin=admin,
            dataplanes=[u for u, _, _ in dataplanes],
            sims=[u for u, _, _ in sims],
            sim_processes=[p for _, p, _ in sims],
            logs=tmp_path,
        )


def _configure(cluster: Cluster) -> None:
    for i, url in enumerate(cluster.sims):
        port = int(url.rsplit(":", 1)[1])
        resp = cluster.admin.put(
            "/v1.0/backends",
            json={"Identifier": f"sim{i}", "Name": f"sim {i}", "Hostname": "127.0.0.1", "Port": port},
        )
        assert resp.status_code == 201, resp.text
    resp = cluster.admin.put(
        "/v1.0/frontends",
        json={
            "Identifier": "all",
            "Name": "all",
            "Hostname": "*",
            "Backends": ["sim0", "sim1"],
            "LoadBalancing": "RoundRobin",  # the test below counts on the rotation
        },
    )
    assert resp.status_code == 201, resp.text


def _wait_for(predicate, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_admin_config_reaches_both_dataplanes_and_they_serve(cluster: Cluster) -> None:
    _configure(cluster)
    for url in cluster.dataplanes:
        _wait_for(lambda url=url: httpx.get(url + "/readyz").status_code == 200)

    for url in cluster.dataplanes:
        client = ollama.Client(host=url)
        parts = list(client.chat(model="llama3.2", messages=[{"role": "user", "content": "hi"}], stream=True))
        assert parts[-1].done
        assert "".join(p.message.content for p in parts).strip()
        assert client.generate(model="llama3.2", prompt="hi").response.strip()
        assert len(client.embed(model="all-minilm", input=["a", "b"]).embeddings) == 2

    # Round-robin over the two backends, seen from each data plane.
    for url in cluster.dataplanes:
        served = {
            httpx.post(
                url + "/api/generate", json={"model": "llama3.2", "prompt": "x", "stream": False}
            ).headers["x-ollamaflow-backend"]
            for _ in range(4)
        }
        assert served == {"sim0", "sim1"}

    # Both data planes report in with the revision they applied.
    def both_reported() -> bool:
        planes = cluster.admin.get("/v1.0/dataplanes").json()
        return {p["Id"] for p in planes} >= {"dp0", "dp1"}

    _wait_for(both_reported)


def test_a_change_reaches_running_dataplanes(cluster: Cluster) -> None:
    _configure(cluster)
    for url in cluster.dataplanes:
        _wait_for(lambda url=url: httpx.get(url + "/readyz").status_code == 200)
    resp = cluster.admin.put(
        "/v1.0/frontends/all",
        json={"Name": "all", "Hostname": "*", "Backends": ["sim1"]},
    )
    assert resp.status_code == 200, resp.text

    def only_sim1(url: str) -> bool:
        served = {
            httpx.post(
                url + "/api/generate", json={"model": "llama3.2", "prompt": "x", "stream": False}
            ).headers.get("x-ollamaflow-backend")
            for _ in range(4)
        }
        return served == {"sim1"}

    for url in cluster.dataplanes:
        _wait_for(lambda url=url: only_sim1(url), timeout=5)


def _generate(url: str) -> httpx.Response:
    return httpx.post(url + "/api/generate", json={"model": "llama3.2", "prompt": "x", "stream": False})


def test_a_backend_killed_under_traffic_costs_no_request_and_returns_when_back(cluster: Cluster) -> None:
    _configure(cluster)
    dp = cluster.dataplanes[0]
    _wait_for(
        lambda: {_generate(dp).headers.get("x-ollamaflow-backend") for _ in range(4)} == {"sim0", "sim1"}
    )

    cluster.sim_processes[0].kill()
    cluster.sim_processes[0].wait()
    # Under steady traffic: refused connections fail over to sim1, so no client request fails.
    served = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        resp = _generate(dp)
        assert resp.status_code == 200, resp.text
        served.append(resp.headers["x-ollamaflow-backend"])
    assert set(served[-10:]) == {"sim1"}

    # The control plane's probes mark it down within its thresholds (0.5 s interval, 2 failures).
    _wait_for(lambda: cluster.admin.get("/v1.0/backends/sim0/health").json()["Healthy"] is False, 10)

    # Back on the same port: probed healthy again and both backends serve once more.
    port = cluster.sims[0].rsplit(":", 1)[1]
    with ollamaflow(["sim", "--port", port], cluster.logs / "sim0-again.log") as again:
        wait_ready(cluster.sims[0] + "/api/version", again, cluster.logs / "sim0-again.log")
        _wait_for(lambda: cluster.admin.get("/v1.0/backends/sim0/health").json()["Healthy"] is True, 10)
        _wait_for(
            lambda: {_generate(dp).headers.get("x-ollamaflow-backend") for _ in range(4)} == {"sim0", "sim1"},
            20,
        )
