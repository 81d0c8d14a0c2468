"""Sending a generation: paced chunks, injected failures, and stopping when the client leaves."""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from ollamaflow.sim.asgi import ApiError, Request, Streamer, until_disconnect
from ollamaflow.sim.models import ModelCard
from ollamaflow.sim.state import SimState
from ollamaflow.sim.timing import Pace

__all__ = ["SIMULATED_FAILURE", "Generation", "guarded", "injected_failure", "stream_chunks"]

SIMULATED_FAILURE = "simulated failure (fail_rate)"
# Ollama's own words when its queue is full (OLLAMA_MAX_QUEUE).
SERVER_BUSY = "server busy, please try again.  maximum pending requests exceeded"


def injected_failure(status: int) -> ApiError:
    """The error a request picked by fail_rate gets, by the configured status."""
    if status == 503:
        return ApiError(503, SERVER_BUSY)
    if status == 429:
        return ApiError(429, "rate limit exceeded (simulated)", code="rate_limit_exceeded")
    return ApiError(status, SIMULATED_FAILURE)


# A stream this long takes noticeable time even unpaced, so it too stops when the client leaves.
LONG_STREAM = 64


async def guarded(
    req: Request, state: SimState, pace: Pace, work: Coroutine[Any, Any, None], *, chunks: int = 0
) -> None:
    """Run a reply; if it takes time (a pause or a long stream), stop it when the client disconnects.

    Watching costs a task per request, so instant replies, which cannot be cut short anyway, skip it.
    """
    if not pace.delayed and chunks <= LONG_STREAM:
        await work
        return
    if not await until_disconnect(req.receive, work):
        state.stats.disconnects += 1


async def stream_chunks(
    pace: Pace,
    streamer: Streamer,
    state: SimState,
    chunks: Iterator[bytes],
    finish: Callable[[], bytes],
    *,
    count: int,
    fail_with: bytes | None = None,
) -> None:
    """Write ``count`` paced chunks, then ``finish()``; ``fail_with`` replaces the second half.

    Chunks are built lazily, after their pause, so per-chunk timestamps are the time of sending.
    """
    await pace.first_byte()
    sent = count // 2 if fail_with is not None else count
    for index in range(sent):
        await pace.chunk(index)
        await streamer.write(next(chunks))
        state.stats.chunks_sent += 1
    if fail_with is not None:
        await pace.chunk(sent)
        await streamer.write(fail_with)
    else:
        await streamer.write(finish())
    await streamer.end()


class Generation:
    """One inference request from admission to its end: in-flight count, faults, model load state."""

    __slots__ = ("_card", "_keep_alive", "_state", "failure", "pace")

    def __init__(self, state: SimState, card: ModelCard, keep_alive_s: float, *, stream: bool) -> None:
        self._state = state
        self._card = card
        self._keep_alive = keep_alive_s
        self.pace = Pace(state.knobs)
        # Set when this stream is to fail after it started (the status is 200 by then).
        self.failure: ApiError | None = None
        if state.should_fail():
            failure = injected_failure(state.knobs.fail_status)
            if not (stream and state.knobs.fail_mid_stream):
                raise failure
            self.failure = failure

    def __enter__(self) -> Generation:
        self._state.stats.enter()
        # Loaded while in use even when keep_alive is 0; the expiry counts from the end.
        self._state.store.keep_loaded(self._card, self._keep_alive or 60.0, time.time())
        self.pace.loaded()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._state.stats.leave()
        self._state.store.keep_loaded(self._card, self._keep_alive, time.time())
