"""Noticing a client that went away, so that its upstream request is cancelled.

uvicorn drops writes to a closed connection silently, so only ``receive`` returning
``http.disconnect`` tells. Waiting on it costs a task and a receive per request, measured at about a
fifth of the data plane's CPU time on a small non-streamed request, so a request is watched only
once it has run for one to two ``WATCH_AFTER`` periods. One timer for all requests ticks each
period and starts the watch of those that were already running at the previous tick (a timer per
request cost 4 us of ~200 us). A client that leaves a quicker request costs its backend at most
that long.
"""

from __future__ import annotations

import asyncio
from typing import Any

from dataplane.http.incoming import Receive
from dataplane.http.sent import Sent
from dataplane.http.stream_framing import NOT_STARTED

__all__ = ["WATCH_AFTER", "DisconnectGuard", "DisconnectWatch"]

WATCH_AFTER = 0.1


class DisconnectGuard(Sent):
    """Cancels ``task`` when the client disconnects, unless the response is already finishing.

    It also keeps what went to the client so far (``Sent``, and ``framing``; ``dataplane.drain``), so
    that a drain that must end the request can end it in its format, and the request's metrics and
    access-log line can say what it sent.
    """

    __slots__ = ("_receive", "_task", "_watch", "_watcher", "finishing", "framing")

    def __init__(self, receive: Receive, task: asyncio.Task[Any], watch: DisconnectWatch) -> None:
        # Sent's fields, set here rather than by calling its __init__: one call less per request.
        self.status = self.sent = 0
        self.first_at = 0.0
        self.last = self.previous = b""
        self.client_gone = False
        self._receive: Receive | None = receive
        self._task: asyncio.Task[Any] | None = task
        self._watch = watch
        self._watcher: asyncio.Task[None] | None = None
        self.finishing = False  # the last message is being written: a disconnect changes nothing now
        self.framing = NOT_STARTED  # until the answer's head went out

    def start(self) -> None:
        task, receive = self._task, self._receive
        assert task is not None and receive is not None, "started after close"
        self._watcher = task.get_loop().create_task(self._wait_for_disconnect(task, receive))

    async def _wait_for_disconnect(self, task: asyncio.Task[Any], receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        if not self.finishing:
            self.client_gone = True
            task.cancel()

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        else:
            self._watch.forget(self)
        # What went out is read once the request ended (by the metrics, the access log, a trace), but
        # its task and its connection's receive are done with: let them go now.
        self._task = self._receive = None


class DisconnectWatch:
    """Hands out guards and starts their watch from one periodic timer, armed only while needed."""

    __slots__ = ("_after", "_older", "_timer", "_younger")

    def __init__(self, after: float = WATCH_AFTER) -> None:
        self._after = after
        self._younger: set[DisconnectGuard] = set()  # registered since the last tick
        self._older: set[DisconnectGuard] = set()  # registered before it: due at the next tick
        self._timer: asyncio.TimerHandle | None = None

    def guard(self, receive: Receive, task: asyncio.Task[Any]) -> DisconnectGuard:
        guard = DisconnectGuard(receive, task, self)
        self._younger.add(guard)
        if self._timer is None:
            self._timer = task.get_loop().call_later(self._after, self._tick, task.get_loop())
        return guard

    def forget(self, guard: DisconnectGuard) -> None:
        self._younger.discard(guard)
        self._older.discard(guard)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        for guard in self._older:
            guard.start()
        self._older, self._younger = self._younger, set()
        self._timer = loop.call_later(self._after, self._tick, loop) if self._older else None
