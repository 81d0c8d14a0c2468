"""What metrics cost a request, measured inside one process (``ollamaflow bench --observability``).

Requests/s through servers that share a 2-core machine move by ±15% from round to round, so they
cannot show a cost of a few percent. Here two data planes run in one process over the in-memory bus,
with a canned backend and no socket: one observes nothing, the other has its metrics on (access log
and traces off in both). Small chats (non-streamed, or with ``--stream`` streamed in 12 chunks) go to
each in alternating blocks, each block's CPU time (``process_time``) per request is taken, and the
cost is the median of the paired differences. It runs in a child process of its own (``python -m
ollamaflow.bench.observe_cost``), so that the heap the collector walks is a data plane's, not the
bench's.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, MutableMapping
from pathlib import Path
from typing import Any

import msgspec

from dataplane.app import DataPlane
from dataplane.settings import DataPlaneSettings
from dataplane.upstream.transport import Origin
from shared.memory_bus import MemoryBroker, MemoryBus
from shared.signing import sign
from shared.signing_keys import ensure_key_pair, load_signer
from shared.snapshot import BackendView, FrontendView, SnapshotContent, encode, seal

__all__ = ["InProcessCost", "measure"]

# What a small Ollama chat answer looks like (the simulator's, with its token counts).
_ANSWER = (
    b'{"model":"llama3.2","created_at":"2025-01-01T00:00:00Z","message":{"role":"assistant",'
    b'"content":"Hello! How can I help you today?"},"done":true,"done_reason":"stop",'
    b'"total_duration":1000000,"load_duration":1000,"prompt_eval_count":12,'
    b'"prompt_eval_duration":1000,"eval_count":9,"eval_duration":1000}'
)
_REQUEST = b'{"model":"llama3.2","messages":[{"role":"user","content":"hi"}],"stream":false}'
_STREAM_REQUEST = _REQUEST.replace(b'"stream":false', b'"stream":true')
# The same answer streamed as Ollama streams it: a line per token, then the final object with the counts.
_WORDS = (b"Hello", b"!", b" How", b" can", b" I", b" help", b" you", b" today", b"?", b"", b"")
_STREAMED = (
    *(
        b'{"model":"llama3.2","created_at":"2025-01-01T00:00:00Z","message":{"role":"assistant",'
        b'"content":"%s"},"done":false}\n' % word
        for word in _WORDS
    ),
    b'{"model":"llama3.2","created_at":"2025-01-01T00:00:00Z","message":{"role":"assistant",'
    b'"content":""},"done":true,"done_reason":"stop","total_duration":1000000,"load_duration":1000,'
    b'"prompt_eval_count":12,"prompt_eval_duration":1000,"eval_count":9,"eval_duration":1000}\n',
)
_WARMUP = 2_000  # requests to each data plane before the blocks
_TIMEOUT_S = 600.0


class InProcessCost(msgspec.Struct, frozen=True, kw_only=True):
    """Data-plane CPU per small chat, in µs: the median block of each data plane, and the median
    (and quartiles) of what the observing one took more in each pair of blocks."""

    stream: bool = False  # streamed chats (else non-streamed)
    blocks: int  # pairs of blocks
    requests_per_block: int
    bare_us: float
    observed_us: float
    added_us: float
    added_q1_us: float
    added_q3_us: float


def measure(*, blocks: int = 16, per_block: int = 5_000, stream: bool = False) -> InProcessCost:
    """Run the measurement in a child process and return what it found."""
    argv = [sys.executable, "-m", "ollamaflow.bench.observe_cost", "--blocks", str(blocks)]
    argv += ["--per-block", str(per_block), *(["--stream"] if stream else [])]
    done = subprocess.run(argv, capture_output=True, timeout=_TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"the in-process measurement failed: {done.stderr.decode(errors='replace')[-2000:]}"
        )
    return msgspec.json.decode(done.stdout.strip().splitlines()[-1], type=InProcessCost)


class _Answer:
    """The canned backend's answer (a ``dataplane.upstream.transport.UpstreamResponse``)."""

    status = 200
    headers = [
        (b"content-type", b"application/json; charset=utf-8"),
        (b"content-length", b"%d" % len(_ANSWER)),
    ]
    content_length: int | None = len(_ANSWER)
    content_type = b"application/json; charset=utf-8"
    chunks: tuple[bytes, ...] = (_ANSWER,)

    async def read(self, limit: int) -> bytes:
        return _ANSWER

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk

    def release(self) -> None:
        return None

    def close(self) -> None:
        return None


class _Streamed(_Answer):
    """The canned answer, streamed (no length: chunk by chunk)."""

    headers = [(b"content-type", b"application/x-ndjson"), (b"transfer-encoding", b"chunked")]
    content_length = None
    content_type = b"application/x-ndjson"
    chunks = _STREAMED


class _Backend:
    """A ``dataplane.upstream.transport.Transport`` that answers every request at once, streamed
    when the request asked for a stream."""

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def request(
        self, backend_id: str, origin: Origin, head: bytes, body: bytes, progress_timeout: float
    ) -> _Answer:
        return _Streamed() if b'"stream":true' in body else _Answer()


def _scope(length: int) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/chat",
        "raw_path": b"/api/chat",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"bench"), (b"content-length", b"%d" % length)],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 11434),
    }


async def _chats(plane: DataPlane, count: int, never: asyncio.Event, request: bytes) -> None:
    """``count`` small chats through ``plane``, one after the other, as a server would hand them in;
    RuntimeError unless each is answered 200 in as many body chunks as the backend gave (one, or one
    per streamed line)."""
    scope = _scope(len(request))
    chunks = len(_STREAMED) if request == _STREAM_REQUEST else 1
    for _ in range(count):
        sent = False
        written = 0

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": request, "more_body": False}
            await never.wait()  # the client stays: no disconnect
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            nonlocal written
            if message["type"] == "http.response.start" and message["status"] != 200:
                raise RuntimeError(f"the data plane answered {message['status']}")
            if message.get("body"):
                written += 1

        await plane(dict(scope), receive, send)  # type: ignore[arg-type]
        if written != chunks:
            raise RuntimeError(f"the data plane answered in {written} body chunks, not {chunks}")


async def _measure(blocks: int, per_block: int, workdir: Path, stream: bool) -> InProcessCost:
    private, public = ensure_key_pair(workdir / "keys")
    broker = MemoryBroker()
    planes: dict[bool, DataPlane] = {}
    for metrics in (False, True):
        settings = DataPlaneSettings(
            dataplane_id=f"bench-{'observed' if metrics else 'bare'}",
            snapshot_public_key_files=(public,),
            access_log=False,
            metrics=metrics,
        )
        planes[metrics] = DataPlane(settings, bus=MemoryBus(broker), upstream=_Backend())  # type: ignore[arg-type]
        await planes[metrics].startup()
    unlimited = {"max_parallel_requests": 1_000_000, "rate_limit_requests_threshold": 1_000_000_000}
    content = SnapshotContent(
        frontends=(FrontendView(id="bench", hostname="*", backends=("sim",)),),
        backends=(BackendView(id="sim", base_url="http://sim:11434", **unlimited),),  # type: ignore[arg-type]
    )
    snapshot = sign(seal(content, revision=1, generated_at="1970-01-01T00:00:00Z"), load_signer(private))
    writer = MemoryBus(broker)
    await writer.connect()
    await writer.write_snapshot(encode(snapshot), last=None, revision=1, content_hash=snapshot.content_hash)
    deadline = time.monotonic() + 10
    while any(plane.state.revision != 1 for plane in planes.values()):
        if time.monotonic() > deadline:
            raise RuntimeError("the data planes did not apply the snapshot")
        await asyncio.sleep(0.02)
    never = asyncio.Event()
    request = _STREAM_REQUEST if stream else _REQUEST
    for plane in planes.values():
        await _chats(plane, _WARMUP, never, request)
    gc.collect()
    taken: dict[bool, list[float]] = {False: [], True: []}
    for index in range(blocks):
        for metrics in (False, True) if index % 2 == 0 else (True, False):
            started = time.process_time()
            await _chats(planes[metrics], per_block, never, request)
            taken[metrics].append((time.process_time() - started) / per_block * 1e6)
    added = sorted(observed - bare for bare, observed in zip(taken[False], taken[True], strict=True))
    return InProcessCost(
        stream=stream,
        blocks=blocks,
        requests_per_block=per_block,
        bare_us=_median(taken[False]),
        observed_us=_median(taken[True]),
        added_us=_median(added),
        added_q1_us=added[len(added) // 4],
        added_q3_us=added[(3 * len(added)) // 4],
    )


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=16)
    parser.add_argument("--per-block", type=int, default=5_000)
    parser.add_argument("--stream", action="store_true", help="streamed chats (12 chunks each)")
    args = parser.parse_args()
    asyncio.run(_run(max(2, args.blocks), max(1, args.per_block), args.stream))


async def _run(blocks: int, per_block: int, stream: bool) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="ollamaflow-bench-cost-"))
    try:
        cost = await _measure(blocks, per_block, workdir, stream)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    sys.stdout.write(msgspec.json.encode(cost).decode() + "\n")
    sys.stdout.flush()
    # The data planes are left running: the process ends here (their shutdown and the loop's would
    # only wait on the in-memory bus's subscriptions).
    os._exit(0)


if __name__ == "__main__":
    _main()
