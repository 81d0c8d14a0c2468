"""Sticky sessions across data-plane replicas: two `ollamaflow dataplane` processes, three simulators.

Both data planes follow the same snapshot (written to the bus as the control plane would) and agree on
each session's backend without talking to each other; when that backend dies, both move the session to
the same next backend, and the other sessions stay where they were.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from shared.bus import Bus, BusNames
from shared.errors import BusNoResponder
from shared.snapshot import BackendView, FrontendView, SnapshotContent
from shared.wire.explain import ExplainRequest, decode_reply, encode
from tests.dataplane.harness import SnapshotWriter
from tests.support.processes import free_port, ollamaflow, stop, wait_ready
from tests.support.signing import SnapshotKeys

pytestmark = pytest.mark.slow

SESSIONS = [f"conversation-{i}" for i in range(12)]
BODY = {"model": "llama3.2", "prompt": "hi", "stream": False}


@dataclass
class Replicas:
    dataplanes: list[str]
    sims: dict[str, str]  # backend id -> URL
    sim_processes: dict[str, subprocess.Popen[bytes]]
    bus: Bus


@pytest.fixture
async def replicas(
    tmp_path: Path, nats_url: str, bus_namespace: str, snapshot_keys: SnapshotKeys
) -> AsyncIterator[Replicas]:
    env = snapshot_keys.env() | {
        "OLLAMAFLOW_NATS_URL": nats_url,
        "OLLAMAFLOW_BUS_NAMESPACE": bus_namespace,
        "OLLAMAFLOW_SNAPSHOT_POLL_INTERVAL": "0.5",
    }
    bus = Bus(nats_url, BusNames(bus_namespace), client_name="e2e-sticky")
    await bus.connect()
    with ExitStack() as stack:
        sims, procs = {}, {}
        for i in range(3):
            port, log = free_port(), tmp_path / f"sim{i}.log"
            procs[f"sim{i}"] = stack.enter_context(ollamaflow(["sim", "--port", str(port)], log))
            sims[f"sim{i}"] = f"http://127.0.0.1:{port}"
        dataplanes = []
        for i in range(2):
            port, log = free_port(), tmp_path / f"dp{i}.log"
            args = ["dataplane", "--host", "127.0.0.1", "--port", str(port), "--id", f"dp{i}"]
            proc = stack.enter_context(ollamaflow(args, log, env))
            dataplanes.append((f"http://127.0.0.1:{port}", proc, log))
        for i, (backend, url) in enumerate(sims.items()):
            await asyncio.to_thread(
                wait_ready, url + "/api/version", procs[backend], tmp_path / f"sim{i}.log"
            )
        await SnapshotWriter(bus).publish(_content(sims), revision=1)
        for url, proc, log in dataplanes:  # ready = a snapshot applied
            await asyncio.to_thread(wait_ready, url + "/readyz", proc, log, 60)
        try:
            yield Replicas([u for u, _, _ in dataplanes], sims, procs, bus)
        finally:
            await bus.close()


def _content(sims: dict[str, str], unhealthy: frozenset[str] = frozenset()) -> SnapshotContent:
    backends = tuple(
        BackendView(
            id=backend,
            base_url=url,
            healthy=backend not in unhealthy,
            max_parallel_requests=8,
            # A backend out of tokens counts as full and the session gives way: keep the rate out of it.
            rate_limit_requests_threshold=1_000_000,
        )
        for backend, url in sims.items()
    )
    frontend = FrontendView(id="chat", hostname="*", backends=tuple(sims), use_sticky_sessions=True)
    return SnapshotContent(frontends=(frontend,), backends=backends)


async def _served(client: httpx.AsyncClient, dataplane: str, session: str) -> str:
    resp = await client.post(dataplane + "/api/generate", json=BODY, headers={"X-Conversation-Id": session})
    assert resp.status_code == 200, resp.text
    return resp.headers["x-ollamaflow-backend"]


async def _homes(client: httpx.AsyncClient, dataplane: str) -> dict[str, str]:
    return {session: await _served(client, dataplane, session) for session in SESSIONS}


async def _eventually(check: Callable[[], object], within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not await check():  # type: ignore[misc]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def test_replicas_agree_on_sessions_and_move_them_together_when_a_backend_dies(
    replicas: Replicas,
) -> None:
    first, second = replicas.dataplanes
    async with httpx.AsyncClient(timeout=10) as client:
        homes = await _homes(client, first)
        assert len(set(homes.values())) >= 2  # the sessions spread over the backends
        assert await _homes(client, second) == homes  # the other replica agrees, no shared store
        assert await _homes(client, first) == homes  # and it sticks

        # A dry-run over the bus (either replica answers) names the same home.
        session = SESSIONS[0]
        ask = ExplainRequest(model="llama3.2", headers={"X-Conversation-Id": session})
        deadline = time.monotonic() + 20
        while True:
            try:
                reply = decode_reply(
                    await replicas.bus.request(replicas.bus.names.explain_subject, encode(ask))
                )
                break
            except BusNoResponder:
                assert time.monotonic() < deadline, "no data plane answers dry-runs"
                await asyncio.sleep(0.1)
        assert reply.status == 200 and reply.order[0] == homes[session] and reply.sticky_key

        # Kill the home of the first session: both replicas fail over to the same next backend
        # (its second-heaviest weight) and no request fails; the other sessions do not move.
        dead = homes[session]
        stop(replicas.sim_processes[dead])
        moved = {s for s, home in homes.items() if home == dead}
        after_first = await _homes(client, first)
        after_second = await _homes(client, second)
        assert after_first == after_second
        assert all(after_first[s] == homes[s] for s in SESSIONS if s not in moved)
        assert all(after_first[s] != dead for s in moved)

        # The control plane marks it unhealthy: still the same answer everywhere.
        await SnapshotWriter(replicas.bus).publish(_content(replicas.sims, frozenset({dead})), revision=2)

        async def applied() -> bool:
            states = [(await client.get(dp + "/readyz")).json().get("revision") for dp in replicas.dataplanes]
            return states == [2, 2]

        await _eventually(applied)
        assert await _homes(client, first) == after_first
        assert await _homes(client, second) == after_first
