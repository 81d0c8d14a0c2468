"""Time in a simulated reply: the pause before the first byte, chunk pacing, Ollama's metrics."""

from __future__ import annotations

import asyncio
import time

import msgspec

from ollamaflow.sim.config import Knobs

__all__ = ["Metrics", "Pace", "WallClock", "rfc3339"]


def rfc3339(unix_ns: int) -> str:
    """Go's RFC3339Nano in UTC: ``2025-07-07T20:22:19.1847891Z`` (trailing zeros trimmed)."""
    seconds, nanos = divmod(unix_ns, 1_000_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if nanos:
        stamp += "." + f"{nanos:09d}".rstrip("0")
    return stamp + "Z"


class WallClock:
    """ "Now" in RFC 3339; the whole-second part is cached because streams stamp every chunk."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def now(self) -> str:
        seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
        if seconds != self._second:
            self._second = seconds
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        if nanos:
            return self._prefix + "." + f"{nanos:09d}".rstrip("0") + "Z"
        return self._prefix + "Z"


class Metrics(msgspec.Struct, frozen=True):
    """Ollama's reply metrics, integer nanoseconds; zero values are left out (Go's omitempty)."""

    total_duration: int
    load_duration: int
    prompt_eval_count: int
    prompt_eval_duration: int
    eval_count: int
    eval_duration: int

    def fields(self) -> dict[str, int]:
        values = {
            "total_duration": self.total_duration,
            "load_duration": self.load_duration,
            "prompt_eval_count": self.prompt_eval_count,
            "prompt_eval_duration": self.prompt_eval_duration,
            "eval_count": self.eval_count,
            "eval_duration": self.eval_duration,
        }
        return {key: value for key, value in values.items() if value}


class Pace:
    """The timing of one reply, fixed by the knobs in force when it started.

    Chunk ``i`` goes out ``i / tokens_per_second`` after the first one (deadlines, not sleeps in a
    row, so slow sends do not add up); the first one ``latency_ms`` after the request arrived.
    """

    __slots__ = ("_first", "_interval", "_latency", "_loaded", "_start")

    def __init__(self, knobs: Knobs) -> None:
        self._latency = knobs.latency_ms / 1000.0
        self._interval = knobs.token_interval
        self._start = time.perf_counter_ns()
        self._loaded = self._start
        self._first = self._start

    @property
    def delayed(self) -> bool:
        return self._latency > 0 or self._interval > 0

    def loaded(self) -> None:
        """The model is ready (the simulator loads instantly; this splits load from prompt time)."""
        self._loaded = time.perf_counter_ns()

    async def first_byte(self) -> None:
        if self._latency > 0:
            await asyncio.sleep(self._latency)
        self._first = time.perf_counter_ns()

    async def chunk(self, index: int) -> None:
        if self._interval > 0:
            if index > 0:
                delay = (self._first + index * self._interval * 1e9 - time.perf_counter_ns()) / 1e9
                if delay > 0:
                    await asyncio.sleep(delay)
        elif index % 32 == 31:
            # Sends rarely suspend, so an unpaced long stream yields now and then to let other
            # requests, and the watcher of its own client's disconnect, run.
            await asyncio.sleep(0)

    async def whole(self, chunks: int) -> None:
        """A non-streamed reply takes as long as its stream would."""
        await self.first_byte()
        await self.chunk(max(0, chunks - 1))

    def metrics(self, prompt_tokens: int, eval_count: int) -> Metrics:
        end = time.perf_counter_ns()
        return Metrics(
            total_duration=max(1, end - self._start),
            load_duration=max(1, self._loaded - self._start),
            prompt_eval_count=prompt_tokens,
            prompt_eval_duration=max(1, self._first - self._loaded),
            eval_count=eval_count,
            eval_duration=max(1, end - self._first),
        )
