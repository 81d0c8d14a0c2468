"""Rolling restarts under load: two ``ollamaflow dataplane`` processes behind a round-robin client that,
like nginx's ``proxy_next_upstream error``, tries the other replica when a connection is refused. Each
data plane in turn gets SIGTERM, drains, exits and starts again on its port; no request may fail."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from ollamaflow.sim import running_sim
from shared.snapshot import BackendView, FrontendView, SnapshotContent
from tests.dataplane.harness import SnapshotWriter
from tests.support.processes import CLI, free_port, stop, wait_ready
from tests.support.signing import SnapshotKeys

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "user", "content": "Tell me about rolling restarts."}]
CLIENTS = 4


@dataclass
class Replica:
    """One ``ollamaflow dataplane`` process on a fixed port, started again after each stop."""

    port: int
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.proc = await asyncio.to_thread(self._spawn)
        await asyncio.to_thread(wait_ready, self.url + "/readyz", self.proc, self.log)

    def _spawn(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as out:
            argv = [*CLI, "dataplane", "--host", "127.0.0.1", "--port", str(self.port)]
            return subprocess.Popen(argv, env=self.env, stdout=out, stderr=subprocess.STDOUT)

    async def stop(self) -> int:
        assert self.proc is not None
        self.proc.terminate()  # SIGTERM: the drain
        return await asyncio.to_thread(self.proc.wait, 40)

    def close(self) -> None:
        if self.proc is not None:
            stop(self.proc)


@dataclass
class Tally:
    sent: int = 0
    retried: int = 0  # a refused connection, tried again on the other replica
    failed: list[str] = field(default_factory=list)
    spans: list[tuple[str, float, float]] = field(default_factory=list)  # replica url, start, end


class RoundRobin:
    """The edge in miniature: each request on a new connection to the next replica; a refused
    connection (nothing sent) is tried on the next, up to three tries, as nginx does with
    ``proxy_next_upstream error`` and ``proxy_next_upstream_tries 3``."""

    def __init__(self, urls: list[str]) -> None:
        self._urls = urls
        self._turn = itertools.count()
        self._client = httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_keepalive_connections=0))

    async def aclose(self) -> None:
        await self._client.aclose()

    async def chat(self, tally: Tally, *, stream: bool) -> None:
        tally.sent += 1
        body = {"model": "llama3.2", "messages": MESSAGES, "stream": stream}
        first = next(self._turn)
        for attempt in range(3):
            url = self._urls[(first + attempt) % len(self._urls)]  # this request's next replica
            started = time.monotonic()
            try:
                async with self._client.stream("POST", url + "/api/chat", json=body) as response:
                    data = await response.aread()
            except httpx.ConnectError:
                tally.retried += 1
                if attempt == 2:
                    tally.failed.append(f"refused by every replica ({url})")
                continue
            except httpx.HTTPError as exc:
                tally.failed.append(f"{url}: {type(exc).__name__}: {exc}")
                return
            tally.spans.append((url, started, time.monotonic()))
            problem = _problem(response.status_code, data, stream)
            if problem:
                tally.failed.append(f"{url}: {problem}")
            return


def _problem(status: int, data: bytes, stream: bool) -> str:
    if status != 200:
        return f"status {status}: {data[:200]!r}"
    try:
        lines = [json.loads(line) for line in data.splitlines() if line.strip()]
    except ValueError:
        return f"not JSON: {data[:200]!r}"
    if any("error" in line for line in lines):
        return f"an error line: {data[-300:]!r}"
    if not lines or not lines[-1].get("done") or (not stream and len(lines) != 1):
        return f"incomplete: {data[-300:]!r}"
    return ""


@asynccontextmanager
async def _load(balancer: RoundRobin, tally: Tally) -> AsyncIterator[None]:
    """``CLIENTS`` clients, each sending streamed and non-streamed chats one after the other."""
    stop = asyncio.Event()

    async def client(index: int) -> None:
        for count in itertools.count(index):
            if stop.is_set():
                return
            await balancer.chat(tally, stream=count % 2 == 0)

    tasks = [asyncio.create_task(client(i)) for i in range(CLIENTS)]
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 60)


async def test_rolling_restarts_under_load_lose_no_request(
    tmp_path: Path, nats_url: str, bus_namespace: str, writer: SnapshotWriter, snapshot_keys: SnapshotKeys
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OLLAMAFLOW_")}
    env |= snapshot_keys.env() | {
        "OLLAMAFLOW_NATS_URL": nats_url,
        "OLLAMAFLOW_BUS_NAMESPACE": bus_namespace,
        "OLLAMAFLOW_DRAIN_TIMEOUT": "20",
        "OLLAMAFLOW_LOG_LEVEL": "INFO",
    }
    tally = Tally()
    async with AsyncExitStack() as stack:
        # 12 tokens at 20 a second: each answer takes about 0.6 s, so every stop finds some running.
        sims = [await stack.enter_async_context(running_sim(tokens_per_second=20)) for _ in range(2)]
        backends = tuple(
            BackendView(
                id=f"sim{i}", base_url=url, max_parallel_requests=32, rate_limit_requests_threshold=1000
            )
            for i, url in enumerate(sims)
        )
        frontend = FrontendView(id="f", hostname="*", backends=tuple(b.id for b in backends))
        await writer.publish(SnapshotContent(frontends=(frontend,), backends=backends), 1)
        replicas = [
            Replica(
                free_port(),
                env | {"OLLAMAFLOW_SNAPSHOT_CACHE": str(tmp_path / f"dp{i}.snapshot")},
                tmp_path / f"dp{i}.log",
            )
            for i in range(2)
        ]
        for replica in replicas:
            stack.callback(replica.close)
        await asyncio.gather(*(replica.start() for replica in replicas))

        balancer = RoundRobin([replica.url for replica in replicas])
        stack.push_async_callback(balancer.aclose)
        stopped_at: list[tuple[str, float]] = []
        async with _load(balancer, tally):
            await asyncio.sleep(1.5)
            for replica in replicas:
                stopped_at.append((replica.url, time.monotonic()))
                assert await replica.stop() == 0
                await replica.start()  # same port, its snapshot from its cache
                await asyncio.sleep(1.5)

    # Requests a replica was still serving when it got SIGTERM: its drain had to let them finish.
    drained = sum(
        1
        for url, at in stopped_at
        for served_by, start, end in tally.spans
        if served_by == url and start < at < end
    )
    print(
        f"\nrolling restarts: {tally.sent} requests sent, {len(tally.failed)} failed, "
        f"{tally.retried} refused connections retried on the other replica, "
        f"{drained} running on a replica when it got SIGTERM"
    )
    assert not tally.failed, tally.failed[:5]
    assert drained >= 1, "no request was running when a replica stopped: the test proved nothing"
    assert tally.sent >= 20
    for replica in replicas:
        log = replica.log.read_text()
        assert "Traceback" not in log, log[-3000:]
        assert "draining" in log
