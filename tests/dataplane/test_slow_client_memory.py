"""A slow client reading a fast stream costs the data plane bounded memory (a data plane process of
its own, its resident memory measured while the client reads).

The simulator could send the whole answer (about 13 MB) in a few seconds; the client reads about
300 KB/s for six seconds, then the rest at full speed (sized so that a busy CI machine still gets
through it well within the time limit). Without backpressure the data plane
would hold what the client has not read yet; with it, the upstream connection pauses at the
high-water mark and the answer waits in the backend.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from pathlib import Path

import httpx
import psutil
import pytest

from ollamaflow.sim import running_sim
from shared.snapshot import BackendView, FrontendView, SnapshotContent
from tests.dataplane.harness import snapshot_bytes
from tests.support.processes import free_port, ollamaflow, wait_ready
from tests.support.signing import SnapshotKeys

pytestmark = pytest.mark.slow

MiB = 1024 * 1024
SLOW_READ_S = 6.0


def _read_slowly_then_all(port: int, rss: list[int], pid: int) -> tuple[int, int, bytes]:
    """Ask for a long chat stream, read it at ~320 KB/s for a while (sampling the data plane's memory),
    then read the rest at full speed. Returns (bytes read slowly, bytes read in all, last line)."""
    process = psutil.Process(pid)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.connect(("127.0.0.1", port))
    sock.settimeout(60)
    try:
        ask = {"model": "llama3.2", "messages": [{"role": "user", "content": "tell me everything"}]}
        body = json.dumps(ask).encode()
        head = b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
        sock.sendall(head + body)
        slow = 0
        tail = b""
        started = time.monotonic()
        next_sample = started
        while time.monotonic() - started < SLOW_READ_S:
            chunk = sock.recv(16 * 1024)
            assert chunk, "the stream ended early"
            slow += len(chunk)
            tail = (tail + chunk)[-4096:]
            if time.monotonic() >= next_sample:
                rss.append(process.memory_info().rss)
                next_sample += 0.5
            time.sleep(0.05)
        total = slow
        while not tail.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(1024 * 1024)
            assert chunk, "the stream ended without its last chunk"
            total += len(chunk)
            tail = (tail + chunk)[-4096:]
        lines = [line for line in tail.split(b"\n") if line.startswith(b"{")]
        return slow, total, lines[-1]
    finally:
        sock.close()


@pytest.mark.timeout(300)
async def test_a_slow_client_of_a_fast_stream_costs_bounded_memory(
    tmp_path: Path, snapshot_keys: SnapshotKeys
) -> None:
    async with running_sim(answer_tokens=100_000) as sim:
        cache = tmp_path / "snapshot.json"
        content = SnapshotContent(
            frontends=(FrontendView(id="f", backends=("sim",)),),
            backends=(BackendView(id="sim", base_url=sim),),
        )
        cache.write_bytes(snapshot_bytes(content, 1))
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("OLLAMAFLOW_")}
        env |= snapshot_keys.env()
        env |= {
            "OLLAMAFLOW_SNAPSHOT_CACHE": str(cache),
            "OLLAMAFLOW_NATS_URL": f"nats://127.0.0.1:{free_port()}",
        }
        args = ["dataplane", "--host", "127.0.0.1", "--port", str(port)]
        log = tmp_path / "dp.log"
        with ollamaflow(args, log, env) as proc:
            url = f"http://127.0.0.1:{port}"
            await asyncio.to_thread(wait_ready, url + "/readyz", proc, log)
            async with httpx.AsyncClient(timeout=30) as http:  # warm up: one whole answer
                warm_up = {"model": "all-minilm", "input": "x"}
                assert (await http.post(url + "/api/embed", json=warm_up)).status_code == 200
                baseline = psutil.Process(proc.pid).memory_info().rss
            rss: list[int] = []
            slow, total, last = await asyncio.to_thread(_read_slowly_then_all, port, rss, proc.pid)
            after = psutil.Process(proc.pid).memory_info().rss
    peak = max(rss)
    print(
        f"\nslow client: stream {total / MiB:.1f} MiB, "
        f"read slowly {slow / MiB:.2f} MiB in {SLOW_READ_S:g} s; "
        f"data plane RSS baseline {baseline / MiB:.1f} MiB, peak while slow {peak / MiB:.1f} MiB "
        f"(+{(peak - baseline) / MiB:.1f} MiB), after {after / MiB:.1f} MiB; "
        f"samples {[round(r / MiB, 1) for r in rss]}"
    )
    assert json.loads(last)["done"] is True
    assert total > 10 * MiB  # the backend offered far more than the client read slowly
    assert slow < total / 4
    # What the client has not read yet stays in the backend: the data plane holds a few buffers.
    assert peak - baseline < 16 * MiB
