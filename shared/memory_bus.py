"""The bus without NATS: the same operations as ``shared.bus.Bus`` over one in-process broker.

For tests whose point is the planes' logic, not the wire: a control plane's publisher, a data plane's
snapshot follower and their requests to each other meet in a ``MemoryBroker`` with no sockets and no
server to start. Several ``MemoryBus`` clients on one broker behave as several connections to one
NATS server: the KV keys' sequences and compare-and-set, snapshot watches (the current value, then
each new one), fire-and-forget subjects, and requests answered by one member of a queue group (in
turn), with ``BusNoResponder`` when nobody serves the subject. ``tests/shared/test_bus_contract.py``
runs one behaviour suite against both implementations, so this one cannot drift from NATS's.

What it leaves out, because it moves no logic: snapshot pieces (any size is one value), credentials,
TLS and reconnects. ``broker.down()`` / ``broker.up()`` stand in for a server that goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from shared.bus_names import BusNames
from shared.errors import BusError, BusNoResponder, LeaseConflict, SnapshotConflict
from shared.pieces import names_held

__all__ = ["MemoryBroker", "MemoryBus"]

log = logging.getLogger("ollamaflow.bus")

Handler = Callable[[bytes], Awaitable[None]]
Responder = Callable[[bytes], Awaitable[bytes]]


@dataclass
class _Bucket:
    values: dict[str, tuple[bytes, int]] = field(default_factory=dict)  # key -> (value, sequence)
    sequence: int = 0
    watchers: dict[str, set[asyncio.Queue[bytes]]] = field(default_factory=dict)

    def put(self, key: str, value: bytes, last: int | None) -> int | None:
        """Store ``value`` if the key's sequence is ``last`` (None: absent); the new sequence, or
        None when the compare-and-set lost."""
        held = self.values.get(key)
        if (held[1] if held is not None else None) != last:
            return None
        self.sequence += 1
        self.values[key] = (value, self.sequence)
        for queue in self.watchers.get(key, ()):
            queue.put_nowait(value)
        return self.sequence


class _Subscription:
    """Messages handed to one handler in the order they came, one at a time, as nats-py does."""

    def __init__(self, handler: Handler) -> None:
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.task = asyncio.create_task(self._run(handler))

    async def _run(self, handler: Handler) -> None:
        while True:
            data = await self.inbox.get()
            try:
                await handler(data)
            except Exception:
                log.exception("a subscriber's handler failed")


class MemoryBroker:
    """What a NATS server is to its connections: buckets by name, and the subscribers of subjects."""

    def __init__(self) -> None:
        self._buckets: dict[str, _Bucket] = {}
        self._made: dict[str, asyncio.Event] = {}
        self._subscribers: dict[str, list[_Subscription]] = {}
        self._groups: dict[str, dict[str, list[Responder]]] = {}  # subject -> queue -> members
        self._turns = itertools.count()
        self.running = True

    def down(self) -> None:
        """The server went away: every operation fails with BusError until ``up``."""
        self.running = False

    def up(self) -> None:
        self.running = True

    def bucket(self, name: str, *, create: bool) -> _Bucket | None:
        bucket = self._buckets.get(name)
        if bucket is None and create:
            bucket = self._buckets[name] = _Bucket()
            self.made(name).set()
        return bucket

    def made(self, name: str) -> asyncio.Event:
        """Set once bucket ``name`` exists."""
        return self._made.setdefault(name, asyncio.Event())

    def deliver(self, subject: str, data: bytes) -> None:
        for subscription in list(self._subscribers.get(subject, ())):
            subscription.inbox.put_nowait(data)

    def subscribe(self, subject: str, handler: Handler) -> Callable[[], None]:
        subscription = _Subscription(handler)
        subscriptions = self._subscribers.setdefault(subject, [])
        subscriptions.append(subscription)

        def stop() -> None:
            _discard(subscriptions, subscription)
            subscription.task.cancel()

        return stop

    def serve(self, subject: str, queue: str, responder: Responder) -> Callable[[], None]:
        members = self._groups.setdefault(subject, {}).setdefault(queue, [])
        members.append(responder)
        return lambda: _discard(members, responder)

    def responders(self, subject: str) -> list[Responder]:
        """One member of each queue group serving ``subject``, taking turns as NATS spreads them."""
        turn = next(self._turns)
        return [members[turn % len(members)] for members in self._groups.get(subject, {}).values() if members]


class MemoryBus:
    """``shared.bus.Bus``'s operations on a ``MemoryBroker``: a drop-in for the planes in tests."""

    def __init__(self, broker: MemoryBroker, names: BusNames | None = None) -> None:
        self.broker = broker
        self.names = names or BusNames()
        self.url = "memory://"
        self._open = False
        self._stops: list[Callable[[], None]] = []

    # -- the connection --------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._open and self.broker.running

    @property
    def reconnects(self) -> int:
        return 0

    async def connect(self, *, connect_timeout: float = 2.0) -> None:
        if not self.broker.running:
            raise BusError("cannot connect to the in-memory bus: it is down")
        self._open = True

    async def connect_forever(self, *, retry_every: float = 1.0, log_every: float = 5.0) -> None:
        while True:
            try:
                await self.connect()
                return
            except BusError:
                await asyncio.sleep(retry_every)

    async def close(self) -> None:
        self._open = False
        for stop in self._stops:
            stop()
        self._stops.clear()

    def _check(self, what: str) -> None:
        if not self.connected:
            raise BusError(f"cannot {what}: not connected to the in-memory bus")

    def piece_size(self) -> int:
        return 1 << 62  # every snapshot is one value here

    # -- the KV bucket ---------------------------------------------------------------------------

    def _read(self, key: str, what: str) -> tuple[bytes, int] | None:
        self._check(what)
        bucket = self.broker.bucket(self.names.bucket, create=False)
        return None if bucket is None else bucket.values.get(key)

    def _write(self, key: str, data: bytes, last: int | None, what: str) -> int | None:
        self._check(what)
        bucket = self.broker.bucket(self.names.bucket, create=True)
        assert bucket is not None
        return bucket.put(key, data, last)

    async def read_snapshot_head(self) -> tuple[bytes, int] | None:
        return self._read(self.names.snapshot_key, "read the snapshot")

    async def expand_snapshot(self, head: bytes) -> bytes:
        return head

    async def read_snapshot(self) -> tuple[bytes, int] | None:
        return await self.read_snapshot_head()

    async def write_snapshot(
        self, data: bytes, *, last: int | None, revision: int = 0, content_hash: str = "", replaces: int = 0
    ) -> int:
        sequence = self._write(self.names.snapshot_key, data, last, "store the snapshot")
        if sequence is None:
            raise SnapshotConflict("another writer stored a snapshot first")
        return sequence

    async def watch_snapshot(
        self, *, bucket_poll: float = 1.0, held: Callable[[int, str], bool] | None = None
    ) -> AsyncIterator[bytes]:
        self._check("watch the snapshot")
        await self.broker.made(self.names.bucket).wait()  # only writers make the bucket, as on NATS
        bucket = self.broker.bucket(self.names.bucket, create=False)
        assert bucket is not None
        key = self.names.snapshot_key
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        held = bucket.values.get(key)
        if held is not None:
            queue.put_nowait(held[0])
        watchers = bucket.watchers.setdefault(key, set())
        watchers.add(queue)
        try:
            while True:
                try:
                    data = await asyncio.wait_for(queue.get(), timeout=0.5)
                except TimeoutError:
                    if not self.connected:
                        raise BusError("snapshot watch ended: the in-memory bus went down") from None
                    continue
                if held is not None and names_held(data, held):
                    continue  # as on NATS: a manifest of a snapshot the reader needs not
                yield data
        finally:
            watchers.discard(queue)

    async def read_lease(self) -> tuple[bytes, int] | None:
        return self._read(self.names.lease_key, "read the control-plane lease")

    async def write_lease(self, data: bytes, *, last: int | None) -> int:
        sequence = self._write(self.names.lease_key, data, last, "write the control-plane lease")
        if sequence is None:
            raise LeaseConflict("another control plane wrote the lease first")
        return sequence

    async def release_lease(self, *, last: int) -> None:
        self._check("release the control-plane lease")
        bucket = self.broker.bucket(self.names.bucket, create=True)
        assert bucket is not None
        held = bucket.values.get(self.names.lease_key)
        if held is not None and held[1] != last:
            raise LeaseConflict("the lease changed hands before it was released")
        bucket.values.pop(self.names.lease_key, None)
        bucket.sequence += 1  # a delete is a new entry in the stream, as on NATS

    # -- subjects --------------------------------------------------------------------------------

    async def publish_report(self, data: bytes) -> None:
        await self.publish(self.names.reports_subject, data)

    async def subscribe_reports(self, handler: Handler) -> None:
        await self.subscribe(self.names.reports_subject, handler)

    async def publish(self, subject: str, data: bytes) -> None:
        self._check(f"publish on {subject}")
        self.broker.deliver(subject, data)

    async def subscribe(self, subject: str, handler: Handler) -> Callable[[], Awaitable[None]]:
        self._check(f"subscribe to {subject}")
        unsubscribe = self.broker.subscribe(subject, handler)
        self._stops.append(unsubscribe)

        async def stop() -> None:
            unsubscribe()

        return stop

    async def request(self, subject: str, data: bytes, *, wait: float = 5.0) -> bytes:
        self._check(f"send a request on {subject}")
        responders = self.broker.responders(subject)
        if not responders:
            raise BusNoResponder(f"nobody answers on {subject}")
        answers = [asyncio.ensure_future(_answer(responder, subject, data)) for responder in responders]
        try:
            for finished in asyncio.as_completed(answers, timeout=wait):
                reply = await finished
                if reply is not None:
                    return reply
        except TimeoutError:
            pass
        finally:
            for answer in answers:
                answer.cancel()
        raise BusError(f"no answer on {subject} within {wait:g} s")

    async def serve(self, subject: str, handler: Responder, *, queue: str) -> Callable[[], Awaitable[None]]:
        self._check(f"serve {subject}")
        unserve = self.broker.serve(subject, queue, handler)
        self._stops.append(unserve)

        async def stop() -> None:
            unserve()

        return stop


async def _answer(responder: Responder, subject: str, data: bytes) -> bytes | None:
    """A responder's answer; None when it raised (on NATS the requester then hears nothing)."""
    try:
        return await responder(data)
    except Exception:
        log.exception("handler for %s failed", subject)
        return None


def _discard(items: list[Any], item: object) -> None:
    with contextlib.suppress(ValueError):
        items.remove(item)
