"""The data plane's graceful stop (drain): from the first SIGTERM to the last answer.

``dataplane.server`` drives it. On SIGTERM the drain ``begin``s: ``/readyz`` answers 503 ``draining``
and a report saying so goes out at once (``dataplane.follower``), so the control plane hands this plane's
limit shares to the others; the listening socket closes and every client connection ends after its
current answer (``dataplane.http.client_limits``). Requests in flight run on for up to
``OLLAMAFLOW_DRAIN_TIMEOUT``; then ``end`` cancels those still running (their backend connections close,
so the backends stop working) and each ends in its client's format (``end_answer``):

- nothing sent yet (queued, waiting for its backend's first byte, its body still arriving): ``503``
  with ``Retry-After: 1`` and ``Connection: close``, in Ollama's or OpenAI's error shape;
- a stream under way: Ollama's ``{"error": ...}`` line (NDJSON) or OpenAI's error event (SSE), then the
  end of the answer, never a faked ``done``;
- any other answer under way cannot say it in-band: its connection closes before the answer's end.

Running requests register (``enter``/``leave``) with what they sent so far: an ``Answer`` (the ``send``
wrapper of the routes that are not proxied) or the proxy's ``DisconnectGuard``, which keeps the same
fields without wrapping ``send`` on the hot path. One whose last message is being written
(``finishing``) is left to finish.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, MutableMapping
from typing import Any, Protocol

from dataplane.http.incoming import CLOSE
from dataplane.http.responses import Send, send_error
from dataplane.http.stream_framing import NOT_STARTED, error_tail, framing_of
from shared.snapshot import ApiFormat

__all__ = ["Answer", "Answering", "Drain", "drained_message", "end_answer"]

# What a client whose request the drain refused or ended should do: try again (elsewhere) at once.
RETRY_AFTER = (b"retry-after", b"1")


class Answering(Protocol):
    """What has gone to the client: nothing yet, or a started answer's framing and last chunk."""

    framing: int
    last: bytes
    finishing: bool  # the last message is being written: nothing left to end


class Answer:
    """``send`` for one answer, remembering what went out (routes other than the proxied ones)."""

    __slots__ = ("_send", "finishing", "framing", "last")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.framing = NOT_STARTED
        self.last = b""
        self.finishing = False

    async def __call__(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            await self._send(message)
            headers = message.get("headers", ())
            self.framing = framing_of(next((v for k, v in headers if k.lower() == b"content-type"), b""))
            return
        if not message.get("more_body", False):
            self.finishing = True
        await self._send(message)
        if message.get("body"):
            self.last = message["body"]


class Drain:
    """Whether this data plane drains, and the requests it may have to end (on the event loop only)."""

    def __init__(self) -> None:
        self.draining = False
        self.since = 0.0  # time.monotonic() when the drain began
        self.ending = False  # the drain timeout passed: what still runs is ended, what arrives refused
        self.on_begin: list[Callable[[], None]] = []  # e.g. send a report at once
        self._running: dict[asyncio.Task[Any], Answering | None] = {}
        self._ended: set[asyncio.Task[Any]] = set()

    def begin(self) -> bool:
        """Start draining; True the first time."""
        if self.draining:
            return False
        self.draining = True
        self.since = time.monotonic()
        for callback in self.on_begin:
            callback()
        return True

    @property
    def running(self) -> int:
        return len(self._running)

    def enter(self, task: asyncio.Task[Any], answer: Answering | None = None) -> None:
        """``task`` runs a request (again with ``answer`` once it has one that tracks what it sent)."""
        self._running[task] = answer

    def leave(self, task: asyncio.Task[Any]) -> None:
        self._running.pop(task, None)
        self._ended.discard(task)

    def end(self) -> int:
        """The drain timeout passed: cancel every request still running (but one writing its last
        message); each answers its client from ``end_answer``. The number cancelled."""
        self.ending = True
        cancelled = 0
        for task, answer in list(self._running.items()):
            if task in self._ended or task.done() or (answer is not None and answer.finishing):
                continue
            self._ended.add(task)
            task.cancel()
            cancelled += 1
        return cancelled

    def answer_of(self, task: asyncio.Task[Any]) -> Answering | None:
        """What ``task`` registered last as what it sent (None: nothing yet)."""
        return self._running.get(task)

    def ended(self, task: asyncio.Task[Any]) -> bool:
        """Whether ``task`` was cancelled by ``end`` (rather than by its client leaving, say)."""
        return task in self._ended


def drained_message(request_id: str | None = None) -> str:
    message = "the data plane is shutting down and could not finish this request in time; please try again"
    return f"{message} (request {request_id})" if request_id else message


async def end_answer(
    send: Send,
    answer: Answering | None,
    api_format: ApiFormat,
    message: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """End an answer the drain cut short, in its client's format (see the module doc). Once only: an
    answer already finishing (this ended it before, and was cut short again) is left as it is."""
    framing = NOT_STARTED if answer is None else answer.framing
    if answer is not None:
        if answer.finishing:
            return
        answer.finishing = True  # a client leaving now changes nothing
    if framing == NOT_STARTED:
        await send_error(send, api_format, 503, message, [RETRY_AFTER, CLOSE, *(headers or ())])
        return
    tail = error_tail(framing, message, after=b"" if answer is None else answer.last)
    if tail is not None:
        await send({"type": "http.response.body", "body": tail})
    # else: nothing can say it in-band; returning unfinished makes the server close the connection
