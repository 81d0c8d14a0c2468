"""The many-streams generator: opens streamed Ollama chats on a schedule and reads each to its end.

``python -m ollamaflow.bench.streams_gen`` reads a ``StreamsSpec`` as JSON on stdin and writes a
``StreamsResult`` as JSON on stdout.
"""

from __future__ import annotations

import asyncio
import sys
import time

import aiohttp
import msgspec

from ollamaflow.bench import workers
from ollamaflow.bench.openloop import due_at
from ollamaflow.bench.openloop_gen import raise_nofile
from ollamaflow.bench.streams import GENERATOR_SPARE_FILES, StreamsResult, StreamsSpec

__all__ = ["run_streams"]

# A chunk of the simulator's Ollama stream is one short JSON line; anything longer is not one.
_MAX_LINE = 64 * 1024


class _Final(msgspec.Struct):
    done: bool = False


class _Tally:
    __slots__ = ("completed", "errors", "first_chunk_ms", "first_error")

    def __init__(self) -> None:
        self.completed = 0
        self.errors = 0
        self.first_chunk_ms: list[float] = []
        self.first_error = ""

    def fail(self, error: str) -> None:
        self.errors += 1
        self.first_error = self.first_error or error


async def _stream(session: aiohttp.ClientSession, spec: StreamsSpec, tally: _Tally) -> None:
    sent = time.perf_counter()
    first: float | None = None
    last = b""
    try:
        async with session.post(spec.url, data=spec.body) as resp:
            if resp.status != 200:
                tally.fail(f"HTTP {resp.status}")
                return
            async for line in resp.content:
                if first is None:
                    first = time.perf_counter()
                if len(line) > _MAX_LINE:
                    tally.fail("a stream line over 64 KiB")
                    return
                if line.strip():
                    last = line
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        tally.fail(repr(exc))
        return
    try:
        done = msgspec.json.decode(last, type=_Final).done
    except msgspec.DecodeError:
        done = False
    if not done or first is None:
        tally.fail(f"stream ended without its final chunk: {last[:200]!r}")
        return
    tally.completed += 1
    tally.first_chunk_ms.append((first - sent) * 1000.0)


async def run_streams(spec: StreamsSpec) -> StreamsResult:
    connector = aiohttp.TCPConnector(limit=0)  # one connection per stream, all at once
    timeout = aiohttp.ClientTimeout(total=spec.timeout_s)
    tally = _Tally()
    tasks = []
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers={"Content-Type": "application/json"}
    ) as session:
        if spec.start_at:
            await asyncio.sleep(max(0.0, spec.start_at - time.time()))
        start = time.perf_counter()
        for number in range(spec.count):
            delay = due_at(start, spec.phase_s, spec.rate, number) - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_stream(session, spec, tally)))
        opened = time.perf_counter() - start
        await asyncio.gather(*tasks)
    return StreamsResult(
        completed=tally.completed,
        errors=tally.errors,
        first_chunk_ms=tally.first_chunk_ms,
        first_error=tally.first_error,
        opened_s=opened,
    )


def main() -> None:
    spec = msgspec.json.decode(sys.stdin.buffer.read(), type=StreamsSpec)
    raise_nofile(spec.count + GENERATOR_SPARE_FILES)
    workers.use_uvloop()
    workers.write_result(asyncio.run(run_streams(spec)))


if __name__ == "__main__":
    main()
