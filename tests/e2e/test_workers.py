"""``ollamaflow dataplane --workers 2``: two worker processes on one port behind a real control plane.

Both workers report as data planes of their own (``<id>-w0``, ``<id>-w1``) and the control plane
splits the backend's MaxParallelRequests between them, so Ollama clients spread over the one port
never make the backend see more than its limit. A worker killed under load is started again by its
parent; only the requests it was answering fail. SIGTERM drains both workers and the parent exits 0.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import ollama
import pytest

from ollamaflow.processes import process_command_line, process_is_live
from tests.dataplane.harness import eventually
from tests.support.processes import free_port, ollamaflow, wait_ready
from tests.support.services import fresh_database
from tests.support.signing import SnapshotKeys

pytestmark = pytest.mark.slow

LIMIT = 4
TOKEN = "workers-admin-token"
PLANE = "wk"
WORKER_IDS = (f"{PLANE}-w0", f"{PLANE}-w1")


def _two_free_ports() -> int:
    """A port P with P+1 free as well (the workers' metrics ports)."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no two consecutive free ports")


def _workers(parent: int) -> dict[str, int]:
    """The parent's live workers: data-plane id -> pid."""
    try:
        pids = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    except OSError:
        return {}
    found = {}
    for pid in map(int, pids):
        argv = process_command_line(pid)
        if "--id" in argv and process_is_live(pid):
            found[argv[argv.index("--id") + 1]] = pid
    return found


def _requests_counted(metrics_url: str) -> float:
    text = httpx.get(metrics_url).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("ollamaflow_dataplane_requests_total{")
    )


class Cluster:
    def __init__(self, url: str, sim: str, metrics: list[str], proc: subprocess.Popen[bytes], log: Path):
        self.url, self.sim, self.metrics, self.proc, self.log = url, sim, metrics, proc, log


@pytest.fixture
def cluster(
    tmp_path: Path, nats_url: str, bus_namespace: str, snapshot_keys: SnapshotKeys, database_url: str
) -> Iterator[Cluster]:
    with ExitStack() as stack:
        env = snapshot_keys.env() | {
            "OLLAMAFLOW_NATS_URL": nats_url,
            "OLLAMAFLOW_BUS_NAMESPACE": bus_namespace,
            "OLLAMAFLOW_DATABASE_URL": stack.enter_context(fresh_database(database_url)),
            "OLLAMAFLOW_ADMIN_TOKENS": TOKEN,
            "OLLAMAFLOW_REPORT_INTERVAL": "0.5",
            "OLLAMAFLOW_HEALTH_INTERVAL": "0.5",
            "OLLAMAFLOW_HEALTH_TIMEOUT": "0.5",
        }
        sim_port, sim_log = free_port(), tmp_path / "sim.log"
        sim_args = ["sim", "--port", str(sim_port), "--latency-ms", "100"]
        sim_proc = stack.enter_context(ollamaflow(sim_args, sim_log))
        sim = f"http://127.0.0.1:{sim_port}"
        cp_port, cp_log = free_port(), tmp_path / "cp.log"
        cp = stack.enter_context(ollamaflow(["controlplane", "--port", str(cp_port)], cp_log, env))
        dp_port, metrics_port, dp_log = free_port(), _two_free_ports(), tmp_path / "dp.log"
        args = ["dataplane", "--host", "127.0.0.1", "--port", str(dp_port), "--id", PLANE, "--workers", "2"]
        dp_env = env | {"OLLAMAFLOW_DATAPLANE_METRICS_PORT": str(metrics_port)}
        dp = stack.enter_context(ollamaflow(args, dp_log, dp_env))
        url = f"http://127.0.0.1:{dp_port}"
        wait_ready(sim + "/api/version", sim_proc, sim_log)
        wait_ready(url + "/healthz", dp, dp_log)
        cp_url = f"http://127.0.0.1:{cp_port}"
        wait_ready(cp_url + "/readyz", cp, cp_log, timeout=60)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=cp_url + "/v1.0", headers=headers, timeout=10) as admin:
            backend = {
                "Identifier": "sim",
                "Hostname": "127.0.0.1",
                "Port": sim_port,
                "MaxParallelRequests": LIMIT,
                "RateLimitRequestsThreshold": 100_000,
            }
            assert admin.put("/backends", json=backend).status_code == 201
            frontend = {"Identifier": "all", "Hostname": "*", "Backends": ["sim"]}
            assert admin.put("/frontends", json=frontend).status_code == 201
            _wait_for_split(admin)
        metrics = [f"http://127.0.0.1:{metrics_port + k}/metrics" for k in range(2)]
        yield Cluster(url, sim, metrics, dp, dp_log)


def _wait_for_split(admin: httpx.Client) -> None:
    """Until the control plane publishes a share of the backend for each worker, together the limit."""
    deadline = time.monotonic() + 60
    shares: dict[str, object] = {}
    while time.monotonic() < deadline:
        snapshot = admin.get("/snapshot").json()
        content = snapshot.get("content", snapshot.get("Content", {}))
        healthy = any(b["id"] == "sim" and b["healthy"] for b in content.get("backends", []))
        planes = content.get("cluster", {}).get("dataplanes", [])
        shares = {p["id"]: p.get("shares", {}).get("sim") for p in planes}
        if healthy and set(shares) == set(WORKER_IDS) and all(shares.values()):
            assert sum(share["max_parallel"] for share in shares.values()) == LIMIT  # type: ignore[index]
            return
        time.sleep(0.1)
    raise AssertionError(f"the control plane never split the limit between both workers: {shares}")


async def _ask(client: ollama.AsyncClient, i: int) -> None:
    if i % 2:
        answer = await client.generate(model="llama3.2", prompt="hi")
        assert answer.done and answer.response
    else:
        parts = [
            part.message.content
            async for part in await client.chat(
                model="llama3.2", messages=[{"role": "user", "content": "hi"}], stream=True
            )
        ]
        assert "".join(parts)


async def _ids(url: str, connections: int) -> set[str]:
    """The ids of the workers that answered ``connections`` new connections."""
    seen = set()
    for _ in range(connections):
        async with httpx.AsyncClient() as client:
            seen.add((await client.get(url + "/healthz")).json()["id"])
    return seen


async def _peak(sim: str) -> int:
    async with httpx.AsyncClient() as client:
        return int((await client.get(sim + "/_sim/stats")).json()["peak_concurrent"])


async def _reset(sim: str) -> None:
    async with httpx.AsyncClient() as client:
        await client.post(sim + "/_sim/reset")


async def test_two_workers_share_a_port_a_limit_and_survive_a_killed_worker(cluster: Cluster) -> None:
    url, sim = cluster.url, cluster.sim
    # Both workers answer on the one port (the kernel spreads new connections over their sockets).
    assert await _ids(url, 40) == set(WORKER_IDS)

    # Heavy load through the official Ollama client: every request served, the limit held together.
    await _reset(sim)
    before = [_requests_counted(m) for m in cluster.metrics]

    async def client_loop(requests: int) -> None:
        client = ollama.AsyncClient(host=url, timeout=60)
        for i in range(requests):
            await _ask(client, i)

    await asyncio.gather(*(client_loop(6) for _ in range(16)))
    assert 1 <= await _peak(sim) <= LIMIT
    served = [_requests_counted(m) - b for m, b in zip(cluster.metrics, before, strict=True)]
    assert sum(served) == 16 * 6 and all(count > 0 for count in served), served

    # A worker killed under load: its parent starts it again; only what it was answering fails.
    workers = _workers(cluster.proc.pid)
    assert set(workers) == set(WORKER_IDS)
    await _reset(sim)
    loops, failures, done = 8, [], 0
    stop = asyncio.Event()

    async def steady() -> None:
        nonlocal done
        client, i = ollama.AsyncClient(host=url, timeout=60), 0
        while not stop.is_set():
            try:
                await _ask(client, i)
            except (ollama.ResponseError, httpx.HTTPError) as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
                client = ollama.AsyncClient(host=url, timeout=60)  # a client that retries does so
            else:
                done += 1
            i += 1

    load = [asyncio.create_task(steady()) for _ in range(loops)]
    await eventually(lambda: done >= 20, 30, "load under way")
    os.kill(workers[WORKER_IDS[1]], signal.SIGKILL)
    killed_at = done
    deadline = time.monotonic() + 30
    while (restarted := _workers(cluster.proc.pid)).get(WORKER_IDS[1]) in (None, workers[WORKER_IDS[1]]):
        assert time.monotonic() < deadline, "the killed worker was not started again"
        await asyncio.sleep(0.05)
    assert restarted[WORKER_IDS[0]] == workers[WORKER_IDS[0]]
    assert done > killed_at, "nothing was served while the worker was down"
    cut = len(failures)
    # At most the one request of each client on the killed worker, cut off: nothing refused or wrong.
    assert cut <= loops, failures
    assert all(f.startswith(("RemoteProtocolError", "ReadError")) for f in failures), failures
    # Once it is back, both serve again and nothing more fails.
    deadline = time.monotonic() + 30
    while await _ids(url, 20) != set(WORKER_IDS):
        assert time.monotonic() < deadline, "the restarted worker never answered"
    after = done
    await eventually(lambda: done >= after + 60, 60, "load after the restart")
    stop.set()
    await asyncio.gather(*load)
    assert failures[cut:] == []
    assert 1 <= await _peak(sim) <= LIMIT

    # SIGTERM: requests under way finish, both workers drain and exit, and so does the parent (0).
    running = _workers(cluster.proc.pid)
    client = ollama.AsyncClient(host=url, timeout=60)
    pending = [asyncio.create_task(_ask(client, i)) for i in range(6)]
    async with httpx.AsyncClient() as plain:
        for _ in range(500):  # until the backend works on some of them
            if (await plain.get(sim + "/_sim/stats")).json()["in_flight"] >= 1:
                break
    cluster.proc.send_signal(signal.SIGTERM)
    await asyncio.gather(*pending)
    assert await asyncio.to_thread(cluster.proc.wait, 30) == 0
    assert not any(process_is_live(pid) for pid in running.values())
    text = cluster.log.read_text()
    assert "Traceback" not in text
    assert text.count("draining: no new connections") == 2
    assert "starting it again" in text
