"""The processes a benchmark runs against: free ports, child processes, readiness, NATS, the snapshot.

Shared by the overhead and the saturation scenarios. The snapshot is written straight to the bus, as
the control plane would, so a benchmark needs neither PostgreSQL nor a control plane.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from shared.bus import Bus, BusNames
from shared.signing import sign
from shared.signing_keys import ensure_key_pair, load_signer
from shared.snapshot import Snapshot, SnapshotContent, encode, seal

__all__ = ["CLI", "free_port", "nats", "process", "publish", "wait_ready"]

CLI = [sys.executable, "-m", "ollamaflow.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def process(
    args: list[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    # Output goes to a file: a pipe nobody reads during the run would fill up and stall the process.
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = log.read_text(errors="replace")
            raise RuntimeError(f"{what} exited with {proc.returncode}: {err[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not become ready at {url}")


async def _publish(nats_url: str, namespace: str, snapshot: Snapshot) -> None:
    bus = Bus(nats_url, BusNames(namespace), client_name="ollamaflow-bench")
    await bus.connect()
    try:
        stored = await bus.read_snapshot_head()
        await bus.write_snapshot(
            encode(snapshot),
            last=stored[1] if stored else None,
            revision=snapshot.revision,
            content_hash=snapshot.content_hash,
        )
    finally:
        await bus.close()


def publish(nats_url: str, namespace: str, content: SnapshotContent, keys: Path) -> dict[str, str]:
    """Write ``content`` as revision 1 of the snapshot in ``namespace``, signed with a key pair made
    in the directory ``keys``; returns the settings a data plane needs to trust it."""
    private, public = ensure_key_pair(keys)
    snapshot = seal(content, revision=1, generated_at="1970-01-01T00:00:00Z")
    asyncio.run(_publish(nats_url, namespace, sign(snapshot, load_signer(private))))
    return {"OLLAMAFLOW_SNAPSHOT_PUBLIC_KEY_FILES": str(public)}


@contextlib.contextmanager
def nats(given: str | None, workdir: Path) -> Iterator[str]:
    """The NATS server to use: the one given, else an embedded one for the length of the block."""
    if given:
        yield given
        return
    from ollamaflow.embedded import EmbeddedNats

    server = EmbeddedNats(workdir / "nats")
    try:
        yield server.start()
    finally:
        server.stop()
