"""One behaviour suite for both buses: ``shared.bus.Bus`` on a real NATS server and
``shared.memory_bus.MemoryBus`` on an in-process broker. What the planes rely on (compare-and-set,
watches, queue groups, no-responder errors) holds for both, so tests that use the in-memory bus test
what NATS would do."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from shared.bus import Bus, BusNames
from shared.errors import BusError, BusNoResponder, LeaseConflict, SnapshotConflict
from shared.memory_bus import MemoryBroker, MemoryBus

Connect = Callable[[], Awaitable[Any]]


@pytest.fixture(params=["nats", "memory"])
async def connect(request: pytest.FixtureRequest, bus_namespace: str) -> AsyncIterator[Connect]:
    """Opens clients of one bus (one namespace on NATS, or one broker), all closed afterwards."""
    names = BusNames(bus_namespace)
    broker = MemoryBroker()
    opened: list[Any] = []

    async def open_one() -> Any:
        if request.param == "nats":
            bus: Any = Bus(request.getfixturevalue("nats_url"), names)
        else:
            bus = MemoryBus(broker, names)
        await bus.connect()
        opened.append(bus)
        return bus

    yield open_one
    for bus in opened:
        await bus.close()


async def _next(stream: AsyncIterator[bytes]) -> bytes:
    return await asyncio.wait_for(anext(stream), timeout=5)


async def test_a_snapshot_is_written_with_compare_and_set_and_read_back(connect: Connect) -> None:
    writer, other, reader = await connect(), await connect(), await connect()
    assert await reader.read_snapshot() is None
    first = await writer.write_snapshot(b"one", last=None)
    with pytest.raises(SnapshotConflict):
        await other.write_snapshot(b"racing", last=None)
    second = await writer.write_snapshot(b"two", last=first)
    assert second > first
    with pytest.raises(SnapshotConflict):
        await other.write_snapshot(b"stale", last=first)
    assert await reader.read_snapshot() == (b"two", second)
    head = await reader.read_snapshot_head()
    assert head is not None and await reader.expand_snapshot(head[0]) == b"two"


async def test_a_watch_waits_for_the_first_snapshot_then_yields_each_new_one(connect: Connect) -> None:
    writer, reader = await connect(), await connect()
    watch = reader.watch_snapshot(bucket_poll=0.05)
    waiting = asyncio.ensure_future(_next(watch))
    await asyncio.sleep(0.2)
    assert not waiting.done()  # nothing stored yet, not even the bucket
    sequence = await writer.write_snapshot(b"one", last=None)
    assert await waiting == b"one"
    await writer.write_snapshot(b"two", last=sequence)
    assert await _next(watch) == b"two"
    await watch.aclose()
    late = reader.watch_snapshot()
    assert await _next(late) == b"two"  # a new watch starts from the current one
    await late.aclose()


async def test_the_lease_is_taken_renewed_and_released_only_by_its_holder(connect: Connect) -> None:
    one, two = await connect(), await connect()
    assert await one.read_lease() is None
    held = await one.write_lease(b"one", last=None)
    with pytest.raises(LeaseConflict):
        await two.write_lease(b"two", last=None)
    renewed = await one.write_lease(b"one again", last=held)
    with pytest.raises(LeaseConflict):
        await two.write_lease(b"two", last=held)
    with pytest.raises(LeaseConflict):
        await two.release_lease(last=held)
    assert await two.read_lease() == (b"one again", renewed)
    await one.release_lease(last=renewed)
    assert await two.read_lease() is None
    assert await two.write_lease(b"two", last=None) > renewed


async def test_subscribers_get_every_message_in_order_until_they_stop(connect: Connect) -> None:
    sender, listener = await connect(), await connect()
    heard: list[bytes] = []
    reports: list[bytes] = []

    async def slow(data: bytes) -> None:
        await asyncio.sleep(0.01 if data == b"0" else 0)  # a slow first one holds up the rest
        heard.append(data)

    async def report(data: bytes) -> None:
        reports.append(data)

    stop = await listener.subscribe("t.subject." + sender.names.namespace, slow)
    await listener.subscribe_reports(report)
    for number in range(5):
        await sender.publish("t.subject." + sender.names.namespace, str(number).encode())
    await sender.publish_report(b"r")
    await _until(lambda: len(heard) == 5 and reports == [b"r"])
    assert heard == [b"0", b"1", b"2", b"3", b"4"]
    await stop()
    await sender.publish("t.subject." + sender.names.namespace, b"late")
    await asyncio.sleep(0.2)
    assert len(heard) == 5


async def test_a_request_is_answered_by_one_member_of_the_queue_group(connect: Connect) -> None:
    asker, first, second = await connect(), await connect(), await connect()
    subject = asker.names.explain_subject
    with pytest.raises(BusNoResponder):
        await asker.request(subject, b"anyone?", wait=1)
    answered: list[str] = []

    def member(name: str) -> Callable[[bytes], Awaitable[bytes]]:
        async def answer(data: bytes) -> bytes:
            answered.append(name)
            return name.encode() + b":" + data

        return answer

    stop_first = await first.serve(subject, member("first"), queue="q")
    await second.serve(subject, member("second"), queue="q")
    replies = [await asker.request(subject, str(n).encode(), wait=5) for n in range(8)]
    assert len(answered) == 8 and {r.split(b":")[1] for r in replies} == {str(n).encode() for n in range(8)}
    await stop_first()
    answered.clear()
    for _ in range(3):
        assert (await asker.request(subject, b"x", wait=5)).startswith(b"second:")
    assert answered == ["second"] * 3


async def test_a_responder_that_fails_leaves_the_requester_to_time_out(connect: Connect) -> None:
    asker, server = await connect(), await connect()

    async def broken(data: bytes) -> bytes:
        raise RuntimeError("boom")

    await server.serve(asker.names.models_subject, broken, queue="q")
    with pytest.raises(BusError, match="no answer"):
        await asker.request(asker.names.models_subject, b"x", wait=0.5)


async def test_a_closed_bus_refuses_with_a_bus_error(connect: Connect) -> None:
    bus = await connect()
    await bus.close()
    assert not bus.connected
    with pytest.raises(BusError):
        await bus.publish("t.closed", b"x")
    with pytest.raises(BusError):
        await bus.write_snapshot(b"x", last=None)


async def _until(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "not within the time"
        await asyncio.sleep(0.01)
