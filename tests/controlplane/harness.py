"""Run a real control plane in-process (uvicorn on a free loopback port, in a thread and event loop of
its own, like a process of its own), and watch what it publishes on the bus."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import uvicorn

from controlplane.app import create_app
from controlplane.clock import Clock
from controlplane.runtime import ControlPlane
from controlplane.settings import Settings
from shared.bus import Bus, BusNames
from shared.snapshot import Snapshot, decode
from tests.support.services import drop_database, fresh_database

__all__ = [
    "FakeClock",
    "RunningControlPlane",
    "drop_database",
    "eventually",
    "fresh_database",
    "running_controlplane",
    "watch_snapshots",
]


@dataclass
class RunningControlPlane:
    url: str
    plane: ControlPlane


@contextlib.contextmanager
def running_controlplane(
    settings: Settings, *, clock: Clock | None = None, wait_ready: bool | None = True
) -> Iterator[RunningControlPlane]:
    """Serve ``create_app(settings)`` on 127.0.0.1:<free port> until the block ends.

    Waits for /readyz, or with ``wait_ready=False`` only for the migrated schema (e.g. NATS is down),
    or with ``None`` only for the server to listen.
    """
    app = create_app(settings, clock=clock)
    # IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY on accepted connections only when the
    # listening socket says TCP; without it every keep-alive answer waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, lifespan="on", log_config=None, access_log=False, http="httptools")
    )
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    plane: ControlPlane = app.state.plane
    try:
        if wait_ready is None:
            enough: Callable[[], bool | None] = lambda: True  # noqa: E731
        else:
            enough = lambda: plane.readiness.schema_ready if not wait_ready else None  # noqa: E731
        _wait_ready(url, server, thread, enough)
        yield RunningControlPlane(url=url, plane=plane)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def _wait_ready(
    url: str,
    server: uvicorn.Server,
    thread: threading.Thread,
    enough: Callable[[], bool | None],
    timeout: float = 30.0,
) -> None:
    """Until /readyz says 200, or ``enough()`` says True (None: wait for /readyz)."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not thread.is_alive():
            raise AssertionError("the control plane stopped during start-up")
        if server.started and enough():
            return
        if server.started:
            with contextlib.suppress(httpx.HTTPError):
                resp = httpx.get(url + "/readyz", timeout=2)
                if resp.status_code == 200:
                    return
                last = resp.text
        time.sleep(0.05)
    raise AssertionError(f"control plane not ready after {timeout}s: {last}")


async def eventually(
    predicate: Callable[[], object], *, within: float = 10.0, what: str = "condition"
) -> None:
    """Poll an (async or sync) predicate until it is truthy; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {within}s")
        await asyncio.sleep(0.05)


class SnapshotWatch:
    """Every snapshot stored on the bus from now on (the current one first), decoded, in order."""

    def __init__(self) -> None:
        self.seen: list[Snapshot] = []
        self._new = asyncio.Condition()

    async def _collect(self, bus: Bus) -> None:
        # The bucket appears with the first publish; the watch waits for it.
        async for data in bus.watch_snapshot(bucket_poll=0.05):
            async with self._new:
                self.seen.append(decode(data))
                self._new.notify_all()

    async def next(
        self, predicate: Callable[[Snapshot], bool] = lambda _: True, *, after: int = 0, within: float = 10.0
    ) -> Snapshot:
        """The first snapshot with revision > ``after`` that satisfies ``predicate``."""

        def found() -> Snapshot | None:
            return next((s for s in self.seen if s.revision > after and predicate(s)), None)

        async with self._new:
            await asyncio.wait_for(self._new.wait_for(found), within)
            snapshot = found()
            assert snapshot is not None
            return snapshot


@contextlib.asynccontextmanager
async def watch_snapshots(nats_url: str, namespace: str) -> AsyncIterator[SnapshotWatch]:
    bus = Bus(nats_url, BusNames(namespace), client_name="test-watch")
    await bus.connect()
    watch = SnapshotWatch()
    task = asyncio.create_task(watch._collect(bus))
    try:
        yield watch
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await bus.close()


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.wall = datetime(2030, 1, 1, tzinfo=UTC)
        self.mono = 1000.0

    def advance(self, seconds: float) -> None:
        self.wall += timedelta(seconds=seconds)
        self.mono += seconds

    def clock(self) -> Clock:
        return Clock(now=lambda: self.wall, monotonic=lambda: self.mono)
