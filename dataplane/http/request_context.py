"""A request's context: the task it runs in, found without a system call, and its id, made without one.

On Python 3.11, ``asyncio.current_task()`` (through ``get_running_loop()``) calls ``getpid()`` each time,
to notice a fork; 3.12 dropped that check. A request asked for its task four times, and a profile of
the data plane under small chats found 5% of its time in ``getpid``. ``asyncio.current_task(loop)``
with the loop given makes no such call, so the loop is kept per thread once found, and checked: a kept
loop that is not this thread's running one has no current task, and the loop is then looked up again.
That holds while a loop runs in one thread only (asyncio's own rule; the data plane runs one loop in
its main thread), and a forked child forgets the kept loop.

``os.urandom`` is a ``getrandom`` call too; request ids need to be unique, not secret, so they come from
``random`` (seeded from the system's randomness at start, and again in a forked child).
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
from typing import Any

__all__ = ["ID_HEADER", "new_id_header", "new_request_id", "running_task"]

ID_HEADER = b"x-ollamaflow-request"  # the header that names a request on its answer and upstream


class _Kept(threading.local):
    loop: asyncio.AbstractEventLoop | None = None


_kept = _Kept()


def _forget() -> None:
    _kept.loop = None  # the child's loops are new; the parent's kept one may still hold its task


os.register_at_fork(after_in_child=_forget)
_bits = random.getrandbits


def running_task() -> asyncio.Task[Any]:
    """The task running now; RuntimeError outside one."""
    loop = _kept.loop
    if loop is not None:
        task = asyncio.current_task(loop)
        if task is not None:
            return task
    task = asyncio.current_task()  # the slow way: finds the running loop (RuntimeError if none)
    if task is None:
        raise RuntimeError("not called from a task")
    _kept.loop = task.get_loop()
    return task


def new_request_id() -> str:
    """A request id: 32 hex digits (128 random bits), as the ids clients send may be too."""
    return f"{_bits(128):032x}"


def new_id_header() -> tuple[bytes, bytes]:
    """X-OllamaFlow-Request with a new id (for answers given before a request's own id is read)."""
    return ID_HEADER, new_request_id().encode()
