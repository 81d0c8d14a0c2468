"""A request's context (dataplane.http.request_context): its task without a system call, and request ids."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import threading
import time

import pytest

from dataplane.http.request_context import new_request_id, running_task


def test_it_is_the_running_task_in_one_loop_after_another() -> None:
    async def both() -> tuple[asyncio.Task[object], asyncio.Task[object] | None]:
        return running_task(), asyncio.current_task()

    for _ in range(3):  # each loop is new: the loop kept from the last one must not answer
        found, current = asyncio.run(both())
        assert found is current


def test_tasks_of_one_loop_each_find_their_own() -> None:
    async def own() -> bool:
        await asyncio.sleep(0)
        return running_task() is asyncio.current_task()

    async def many() -> list[bool]:
        return await asyncio.gather(*(own() for _ in range(5)))

    assert asyncio.run(many()) == [True] * 5


def test_a_thread_never_takes_the_task_another_thread_runs() -> None:
    a_in_task, b_done = threading.Event(), threading.Event()
    matched: dict[str, bool] = {}

    async def a() -> None:
        running_task()  # keeps this thread's loop
        a_in_task.set()
        b_done.wait(10)  # blocks inside its task: its loop's current task stays this one
        matched["a"] = running_task() is asyncio.current_task()

    async def b() -> None:
        matched["b"] = running_task() is asyncio.current_task()
        b_done.set()

    first = threading.Thread(target=asyncio.run, args=(a(),))
    first.start()
    assert a_in_task.wait(10)
    second = threading.Thread(target=asyncio.run, args=(b(),))
    second.start()
    for thread in (first, second):
        thread.join(10)
    assert matched == {"a": True, "b": True}


def test_outside_a_task_it_says_so() -> None:
    with pytest.raises(RuntimeError):
        running_task()


def test_request_ids_are_32_hex_digits_and_differ() -> None:
    ids = {new_request_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(re.fullmatch(r"[0-9a-f]{32}", one) for one in ids)


def test_a_forked_child_does_not_take_its_parents_task() -> None:
    async def fork() -> int:
        running_task()  # keeps this loop, which the child inherits with its current task
        pid = os.fork()
        if pid == 0:  # the child: a new loop must find its own task
            code = 1
            try:
                code = 0 if asyncio.run(_own()) else 3
            finally:
                os._exit(code)
        return pid

    async def _own() -> bool:
        return running_task() is asyncio.current_task()

    child = asyncio.run(fork())
    deadline = time.monotonic() + 20  # a child stuck on a lock another thread held fails, never hangs
    while (done := os.waitpid(child, os.WNOHANG)) == (0, 0) and time.monotonic() < deadline:
        time.sleep(0.01)
    if done == (0, 0):
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        pytest.fail("the forked child did not end")
    assert os.waitstatus_to_exitcode(done[1]) == 0
