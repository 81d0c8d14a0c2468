"""Connecting to NATS: a cancellation that arrives while connecting always wins.

nats-py sometimes swallows it and returns a live connection; a plane that stopped during start-up
(its port was taken, so uvicorn shut it down at once) then never finished stopping.
"""

from __future__ import annotations

import asyncio

from shared.bus import Bus


async def test_cancelling_a_connect_in_flight_always_cancels_it(nats_url: str) -> None:
    requested = 0
    delay = 0.0
    for _ in range(2000):
        if requested >= 40:
            break
        bus = Bus(nats_url)
        task = asyncio.create_task(bus.connect())
        await asyncio.sleep(delay)
        if task.cancel():  # still connecting
            requested += 1
            await asyncio.gather(task, return_exceptions=True)
            assert task.cancelled(), "connect() returned normally although it was cancelled"
            assert not bus.connected
            delay += 0.00002
        else:
            await task
            delay /= 2  # connected before the cancel: try earlier
        await bus.close()
    assert requested >= 10, "never caught a connect in flight"
