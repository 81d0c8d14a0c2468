"""Run a data plane in-process under uvicorn, publish snapshots to it, and wait for what it does.

The data plane gets a thread and an event loop of its own, like a process of its own would, so the
test's loop (clients, simulators) and the data plane's loop never wait on each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace

import httpx
import msgspec

from dataplane.app import DataPlane
from dataplane.server import DataPlaneServer, uvicorn_config
from dataplane.settings import DataPlaneSettings
from shared.bus import Bus
from shared.secret_box import BackendSecrets, seal_secrets
from shared.snapshot import BackendView, FrontendView, SnapshotContent, encode, seal
from shared.wire.reports import DataPlaneReport, decode_report
from tests.support.secrets import TEST_KEYRING
from tests.support.signing import sign_for_tests

__all__ = [
    "RunningDataPlane",
    "SnapshotWriter",
    "content",
    "eventually",
    "running_dataplane",
    "sealed",
    "snapshot_bytes",
]


def snapshot_bytes(content: SnapshotContent, revision: int) -> bytes:
    """A snapshot as the control plane publishes it: sealed and signed with the tests' key."""
    return encode(sign_for_tests(seal(content, revision=revision, generated_at="2025-01-01T00:00:00Z")))


def content(
    backends: dict[str, str], frontends: Sequence[FrontendView] | None = None, **backend_options: object
) -> SnapshotContent:
    """Backends by id -> base URL, and one ``*`` frontend over all of them unless frontends are given."""
    views = tuple(BackendView(id=i, base_url=url, **backend_options) for i, url in backends.items())  # type: ignore[arg-type]
    if frontends is None:
        frontends = [FrontendView(id="all", hostname="*", backends=tuple(backends))]
    return SnapshotContent(frontends=tuple(frontends), backends=views)


def sealed(view: BackendView) -> BackendView:
    """``view`` as a control plane publishes it: its secrets sealed with the test key, none in clear."""
    assert TEST_KEYRING.current is not None
    secrets = BackendSecrets(
        bearer_token=view.bearer_token, querystring=view.querystring, headers=dict(view.headers)
    )
    return msgspec.structs.replace(
        view,
        bearer_token=None,
        querystring=None,
        headers={},
        sealed_secrets=seal_secrets(TEST_KEYRING.current, view.id, secrets),
    )


class SnapshotWriter:
    """What the control plane does, reduced to writing the KV key (tests only)."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def write(self, data: bytes, revision: int = 0) -> None:
        """Store ``data`` (in pieces of ``revision`` if it is larger than the bus's piece size)."""
        stored = await self.bus.read_snapshot_head()
        await self.bus.write_snapshot(data, last=stored[1] if stored else None, revision=revision)

    async def publish(self, content: SnapshotContent, revision: int) -> None:
        await self.write(snapshot_bytes(content, revision), revision)


@dataclass
class RunningDataPlane:
    url: str
    app: DataPlane
    reports: list[DataPlaneReport]
    server: DataPlaneServer
    thread: threading.Thread

    def stop(self) -> None:
        """What SIGTERM does (a second call: what a second signal does)."""
        loop = self.server.loop
        assert loop is not None
        loop.call_soon_threadsafe(self.server.stop)

    async def stopped(self, within: float = 15.0) -> None:
        """Wait until the server has stopped (its drain, then its shutdown, are over)."""
        await asyncio.to_thread(self.thread.join, within)
        assert not self.thread.is_alive(), f"the data plane still runs {within}s later"

    async def readyz(self) -> httpx.Response:
        async with httpx.AsyncClient() as client:
            return await client.get(self.url + "/readyz")

    async def wait_revision(self, revision: int, within: float = 10.0) -> None:
        await eventually(lambda: self.app.state.revision == revision, within, f"revision {revision} applied")


async def eventually(predicate: Callable[[], bool], within: float = 10.0, what: str = "condition") -> None:
    """Poll ``predicate`` until it holds; a deadline for things that happen, never a speed limit."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not met within {within}s")
        await asyncio.sleep(0.05)


def _bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.asynccontextmanager
async def running_dataplane(
    settings: DataPlaneSettings, *, listen_reports: Bus | None = None
) -> AsyncIterator[RunningDataPlane]:
    """Serve a data plane on a free loopback port until the block ends."""
    sock = _bound_socket()
    port = sock.getsockname()[1]
    settings = replace(settings, dataplane_host="127.0.0.1", dataplane_port=port)
    config = uvicorn_config(settings, loop="asyncio", log_level="warning")
    server = DataPlaneServer(config)
    app = config.app
    assert isinstance(app, DataPlane)
    reports: list[DataPlaneReport] = []
    if listen_reports is not None:

        async def on_report(data: bytes) -> None:
            report = decode_report(data)
            if report.id == settings.dataplane_id:
                reports.append(report)

        await listen_reports.subscribe_reports(on_report)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        await eventually(lambda: server.started or not thread.is_alive(), 15, "data plane start")
        assert server.started, "the data plane did not start"
        yield RunningDataPlane(f"http://127.0.0.1:{port}", app, reports, server, thread)
    finally:
        server.should_exit = True  # uvicorn's next tick starts the drain
        await asyncio.to_thread(thread.join, 15)
        if thread.is_alive():  # still draining: what a second signal does
            server.force_exit = True
            await asyncio.to_thread(thread.join, 5)
        sock.close()


async def serve_frontend(
    writer: SnapshotWriter, dp: RunningDataPlane, backends: list[BackendView], **frontend: object
) -> None:
    """Publish one catch-all frontend ``f`` over ``backends`` and wait until ``dp`` applied it."""
    view = FrontendView(id="f", hostname="*", backends=tuple(b.id for b in backends), **frontend)  # type: ignore[arg-type]
    revision = dp.app.state.revision + 1
    await writer.publish(SnapshotContent(frontends=(view,), backends=tuple(backends)), revision)
    await dp.wait_revision(revision)
