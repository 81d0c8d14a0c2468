"""Cluster-wide limits and failover with data planes as separate processes and simulated backends.

Two ``ollamaflow dataplane`` processes share each backend's MaxParallelRequests as the snapshot says
(published straight to the bus, or by a real control plane from the admin API): under a load far
above the limit, the simulator never sees more requests at once than the limit, and every request is
still served. A backend killed while requests are running on it costs no client request either.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from shared.bus import Bus, BusNames
from shared.snapshot import (
    BackendShare,
    BackendView,
    ClusterView,
    DataPlaneView,
    FrontendView,
    SnapshotContent,
)
from tests.dataplane.harness import SnapshotWriter
from tests.support.processes import free_port, ollamaflow, wait_ready
from tests.support.services import fresh_database
from tests.support.signing import SnapshotKeys

pytestmark = pytest.mark.slow

LIMIT = 4
DATAPLANES = ("dp0", "dp1")


def _sims(stack: ExitStack, tmp_path: Path, count: int, latency_ms: int) -> list[tuple[str, object]]:
    sims = []
    for i in range(count):
        port, log = free_port(), tmp_path / f"sim{i}.log"
        args = ["sim", "--port", str(port), "--latency-ms", str(latency_ms)]
        proc = stack.enter_context(ollamaflow(args, log))
        sims.append((f"http://127.0.0.1:{port}", proc, log))
    for url, proc, log in sims:
        wait_ready(url + "/api/version", proc, log)
    return [(url, proc) for url, proc, _ in sims]


def _dataplanes(stack: ExitStack, tmp_path: Path, env: dict[str, str]) -> list[str]:
    planes = []
    for plane in DATAPLANES:
        port, log = free_port(), tmp_path / f"{plane}.log"
        args = ["dataplane", "--host", "127.0.0.1", "--port", str(port), "--id", plane]
        proc = stack.enter_context(ollamaflow(args, log, env))
        planes.append((f"http://127.0.0.1:{port}", proc, log))
    for url, proc, log in planes:
        wait_ready(url + "/healthz", proc, log)
    return [url for url, _, _ in planes]


@pytest.fixture
def processes(
    tmp_path: Path, nats_url: str, bus_namespace: str, snapshot_keys: SnapshotKeys
) -> Iterator[tuple[ExitStack, Path, dict[str, str]]]:
    env = snapshot_keys.env() | {"OLLAMAFLOW_NATS_URL": nats_url, "OLLAMAFLOW_BUS_NAMESPACE": bus_namespace}
    with ExitStack() as stack:
        yield stack, tmp_path, env


async def _publish(nats_url: str, namespace: str, content: SnapshotContent) -> None:
    bus = Bus(nats_url, BusNames(namespace), client_name="limits-test")
    await bus.connect()
    try:
        await SnapshotWriter(bus).publish(content, 1)
    finally:
        await bus.close()


async def _until_ready(client: httpx.AsyncClient, urls: list[str]) -> None:
    for url in urls:
        for _ in range(300):
            if (await client.get(url + "/readyz")).status_code == 200:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"{url} never applied the snapshot")


async def _worker(client: httpx.AsyncClient, url: str, requests: int, failures: list[str]) -> None:
    for i in range(requests):
        if i % 2:
            body = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}  # streamed
            path = "/api/chat"
        else:
            body = {"model": "llama3.2", "prompt": "hi", "stream": False}
            path = "/api/generate"
        answer = await client.post(url + path, json=body)
        if answer.status_code != 200 or b'"error"' in answer.content:
            failures.append(f"{answer.status_code} {answer.text[:200]}")


async def _load_within_limit(planes: list[str], sim: str) -> None:
    """16 clients per data plane, 6 requests each, all answered; the simulator never saw more than
    LIMIT at once."""
    failures: list[str] = []
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=200)) as client:
        await _until_ready(client, planes)
        await client.post(sim + "/_sim/reset")
        workers = [_worker(client, url, 6, failures) for url in planes for _ in range(16)]
        await asyncio.gather(*workers)
        stats = (await client.get(sim + "/_sim/stats")).json()
    assert failures == []
    # (The control plane's probes reach the simulator too: count only the proxied requests.)
    assert stats["by_path"]["/api/generate"] + stats["by_path"]["/api/chat"] == len(planes) * 16 * 6
    assert 1 <= stats["peak_concurrent"] <= LIMIT


async def test_two_dataplanes_under_heavy_load_never_exceed_a_backends_limit_together(
    processes: tuple[ExitStack, Path, dict[str, str]], nats_url: str, bus_namespace: str
) -> None:
    stack, tmp_path, env = processes
    [(sim, _)] = _sims(stack, tmp_path, 1, latency_ms=20)
    planes = _dataplanes(stack, tmp_path, env)
    backend = BackendView(
        id="sim", base_url=sim, max_parallel_requests=LIMIT, rate_limit_requests_threshold=100_000
    )
    # dp0 has the control plane's share; dp1 has none yet and falls back to an even split.
    cluster = ClusterView(
        dataplanes=(
            DataPlaneView(id="dp0", shares={"sim": BackendShare(max_parallel=2, rate_per_second=50_000.0)}),
            DataPlaneView(id="dp1"),
        )
    )
    frontend = FrontendView(id="all", hostname="*", backends=("sim",))
    await _publish(
        nats_url, bus_namespace, SnapshotContent(frontends=(frontend,), backends=(backend,), cluster=cluster)
    )
    await _load_within_limit(planes, sim)


async def test_a_backend_killed_while_answering_costs_no_client_request(
    processes: tuple[ExitStack, Path, dict[str, str]], nats_url: str, bus_namespace: str
) -> None:
    stack, tmp_path, env = processes
    (doomed, doomed_proc), (survivor, _) = _sims(stack, tmp_path, 2, latency_ms=100)
    planes = _dataplanes(stack, tmp_path, env)
    backends = tuple(
        BackendView(id=i, base_url=url, max_parallel_requests=8, rate_limit_requests_threshold=100_000)
        for i, url in (("doomed", doomed), ("survivor", survivor))
    )
    cluster = ClusterView(dataplanes=tuple(DataPlaneView(id=plane) for plane in DATAPLANES))
    frontend = FrontendView(id="all", hostname="*", backends=("doomed", "survivor"))
    await _publish(
        nats_url, bus_namespace, SnapshotContent(frontends=(frontend,), backends=backends, cluster=cluster)
    )
    failures: list[str] = []
    stop = asyncio.Event()
    served = 0

    async def steady(client: httpx.AsyncClient, url: str) -> None:
        nonlocal served
        body = {"model": "llama3.2", "prompt": "hi", "stream": False}
        while not stop.is_set():
            answer = await client.post(url + "/api/generate", json=body)
            if answer.status_code != 200:
                failures.append(f"{answer.status_code} {answer.text[:200]}")
            served += 1

    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=200)) as client:
        await _until_ready(client, planes)
        load = [asyncio.create_task(steady(client, url)) for url in planes for _ in range(6)]
        for _ in range(300):  # killed while it is answering: requests are running on it
            if (await client.get(doomed + "/_sim/stats")).json()["in_flight"] >= 2:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("no load reached the doomed backend")
        doomed_proc.kill()  # type: ignore[attr-defined]
        before = served
        while served < before + 60:  # steady load goes on without it
            await asyncio.sleep(0.05)
            assert not any(task.done() for task in load), [t.exception() for t in load if t.done()]
        stop.set()
        await asyncio.gather(*load)
    assert failures == []


TOKEN = "limits-admin-token"


async def test_the_control_planes_split_keeps_two_dataplanes_within_the_limit(
    processes: tuple[ExitStack, Path, dict[str, str]], database_url: str
) -> None:
    stack, tmp_path, env = processes
    env = {
        **env,
        "OLLAMAFLOW_DATABASE_URL": stack.enter_context(fresh_database(database_url)),
        "OLLAMAFLOW_ADMIN_TOKENS": TOKEN,
        "OLLAMAFLOW_REPORT_INTERVAL": "0.5",
        "OLLAMAFLOW_HEALTH_INTERVAL": "0.5",
        "OLLAMAFLOW_HEALTH_TIMEOUT": "0.5",
    }
    [(sim, _)] = _sims(stack, tmp_path, 1, latency_ms=20)
    cp_port, cp_log = free_port(), tmp_path / "cp.log"
    cp = stack.enter_context(ollamaflow(["controlplane", "--port", str(cp_port)], cp_log, env))
    planes = _dataplanes(stack, tmp_path, env)
    cp_url = f"http://127.0.0.1:{cp_port}"
    wait_ready(cp_url + "/readyz", cp, cp_log, timeout=60)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=cp_url + "/v1.0", headers=headers, timeout=10) as admin:
        backend = {
            "Identifier": "sim",
            "Hostname": "127.0.0.1",
            "Port": int(sim.rsplit(":", 1)[1]),
            "MaxParallelRequests": LIMIT,
            "RateLimitRequestsThreshold": 100_000,
        }
        assert (await admin.put("/backends", json=backend)).status_code == 201
        frontend = {"Identifier": "all", "Hostname": "*", "Backends": ["sim"], "LoadBalancing": "RoundRobin"}
        assert (await admin.put("/frontends", json=frontend)).status_code == 201

        async def split_published() -> bool:
            snapshot = (await admin.get("/snapshot")).json()
            content = snapshot.get("content", snapshot.get("Content", {}))
            healthy = any(b["id"] == "sim" and b["healthy"] for b in content.get("backends", []))
            shares = {p["id"]: p.get("shares", {}).get("sim") for p in content["cluster"]["dataplanes"]}
            return healthy and set(shares) == set(DATAPLANES) and all(shares.values())

        for _ in range(600):
            if await split_published():
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the control plane never published both data planes' shares")
    await _load_within_limit(planes, sim)
