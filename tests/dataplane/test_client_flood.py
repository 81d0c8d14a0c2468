"""A data plane process under a crowd of bad clients: 2,000 sockets that are idle, stop inside their
headers or inside their body, and ten clients sending never-ending 32 MiB headers. A normal client is
still served meanwhile, every bad socket is closed after the timeouts, and the data plane's memory
stays bounded; the RSS figures are printed (run with ``pytest -s``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from shared.snapshot import BackendView, FrontendView, SnapshotContent
from tests.dataplane.harness import snapshot_bytes
from tests.support.processes import free_port, ollamaflow, wait_ready
from tests.support.signing import SnapshotKeys

pytestmark = pytest.mark.slow

SOCKETS = 2000
TIMEOUT = 4.0  # header, body and keep-alive timeouts of the data plane under test
MIB = 1024 * 1024


@dataclass
class Plane:
    url: str
    port: int
    process: psutil.Process

    def rss_mib(self) -> float:
        return self.process.memory_info().rss / MIB


@pytest.fixture
def plane(tmp_path: Path, snapshot_keys: SnapshotKeys) -> Iterator[Plane]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < SOCKETS + 512:
        if hard != resource.RLIM_INFINITY and hard < SOCKETS + 512:
            pytest.skip(f"needs {SOCKETS + 512} open files, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (SOCKETS + 512, hard))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OLLAMAFLOW_")}
    sim_port, port = free_port(), free_port()
    with ollamaflow(["sim", "--port", str(sim_port)], tmp_path / "sim.log", env) as sim:
        sim_url = f"http://127.0.0.1:{sim_port}"
        wait_ready(sim_url + "/api/version", sim, tmp_path / "sim.log")
        content = SnapshotContent(
            frontends=(FrontendView(id="f", hostname="*", backends=("sim",)),),
            backends=(BackendView(id="sim", base_url=sim_url),),
        )
        cache = tmp_path / "snapshot.json"
        cache.write_bytes(snapshot_bytes(content, 1))
        cache.chmod(0o600)  # as a data plane writes its cache (a wider one is tightened with a warning)
        env |= snapshot_keys.env() | {
            "OLLAMAFLOW_SNAPSHOT_CACHE": str(cache),
            "OLLAMAFLOW_NATS_URL": f"nats://127.0.0.1:{free_port()}",  # nobody: it serves from the cache
            "OLLAMAFLOW_CLIENT_HEADER_TIMEOUT": str(TIMEOUT),
            "OLLAMAFLOW_CLIENT_BODY_TIMEOUT": str(TIMEOUT),
            "OLLAMAFLOW_CLIENT_KEEP_ALIVE_TIMEOUT": str(TIMEOUT),
        }
        args = ["dataplane", "--host", "127.0.0.1", "--port", str(port), "--id", "flooded"]
        log = tmp_path / "dp.log"
        with ollamaflow(args, log, env) as proc:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url + "/readyz", proc, log)
            yield Plane(url, port, psutil.Process(proc.pid))
        text = log.read_text()
        assert "Traceback" not in text and " ERROR " not in text and " WARNING " not in text, text[-3000:]


async def _chat(url: str) -> int:
    body = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": False}
    async with httpx.AsyncClient(timeout=15) as client:
        return (await client.post(url + "/api/chat", json=body)).status_code


async def _open(port: int, first: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if first:
        writer.write(first)
    return reader, writer


async def _answer(reader: asyncio.StreamReader) -> bytes:
    received = b""
    with contextlib.suppress(ConnectionError):
        while chunk := await reader.read(65536):
            received += chunk
    return received


async def test_two_thousand_bad_sockets_are_closed_and_do_not_stop_a_normal_client(plane: Plane) -> None:
    kinds = {
        "idle": b"",
        "partial header": b"GET /api/tags HTTP/1.1\r\nHost: test\r\nX-Half: ",
        "partial body": b'POST /api/chat HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\n{"model": ',
    }
    assert await _chat(plane.url) == 200
    before = plane.rss_mib()
    sockets: list[tuple[str, asyncio.StreamReader, asyncio.StreamWriter]] = []
    names = list(kinds)
    for start in range(0, SOCKETS, 250):
        batch = [names[i % len(names)] for i in range(start, start + 250)]
        opened = await asyncio.gather(*(_open(plane.port, kinds[kind]) for kind in batch))
        sockets += [(kind, reader, writer) for kind, (reader, writer) in zip(batch, opened, strict=True)]
    loop = asyncio.get_running_loop()
    served_at = loop.time()
    assert await _chat(plane.url) == 200  # while all 2,000 are held open
    served_in = loop.time() - served_at
    during = plane.rss_mib()
    connections = len(plane.process.net_connections(kind="tcp"))
    try:
        answers = await asyncio.wait_for(asyncio.gather(*(_answer(r) for _, r, _ in sockets)), 60)
    finally:
        for _, _, writer in sockets:
            writer.close()
    await asyncio.sleep(1.0)
    after = plane.rss_mib()
    print(
        f"\n{SOCKETS} bad sockets: data plane RSS before {before:.1f} MiB, with them open {during:.1f} MiB "
        f"({connections} TCP connections), after they were closed {after:.1f} MiB; "
        f"a normal chat while they were open took {served_in * 1000:.0f} ms"
    )
    for (kind, _, _), answer in zip(sockets, answers, strict=True):
        assert answer.startswith(b"HTTP/1.1 408"), (kind, answer[:200])
        if kind == "partial body":  # the app's answer, in the client's (Ollama) format
            assert b'{"error":"request body incomplete' in answer
    assert connections >= SOCKETS
    assert during - before < 150
    assert after - before < 150
    assert await _chat(plane.url) == 200


async def test_ten_endless_32_mib_headers_cost_no_memory(plane: Plane) -> None:
    before = plane.rss_mib()
    piece = b"h" * 65536

    async def endless_header() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", plane.port)

        async def send() -> None:
            with contextlib.suppress(ConnectionError):
                writer.write(b"GET / HTTP/1.1\r\nHost: test\r\nX-Endless: ")
                for _ in range(512):  # 32 MiB, never finished
                    writer.write(piece)
                    await writer.drain()

        sending = asyncio.create_task(send())
        try:
            return await asyncio.wait_for(_answer(reader), 30)
        finally:
            sending.cancel()
            writer.close()

    answers = await asyncio.gather(*(endless_header() for _ in range(10)))
    after = plane.rss_mib()
    print(f"\n10 endless 32 MiB headers: data plane RSS before {before:.1f} MiB, after {after:.1f} MiB")
    assert all(answer.startswith(b"HTTP/1.1 431") for answer in answers)
    assert after - before < 50
    assert await _chat(plane.url) == 200
