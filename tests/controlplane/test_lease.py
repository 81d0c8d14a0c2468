"""The control-plane lease against a real NATS: one holder at a time, takeover, release and fencing."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import msgspec

from controlplane.clock import Clock
from controlplane.lease import Lease, LeaseValue
from shared.bus import Bus, BusNames
from tests.controlplane.harness import eventually

TTL, RENEW = 1.5, 0.4


class _Replica:
    """A lease on a bus connection of its own, with the moments it gained and lost leadership."""

    def __init__(self, nats_url: str, namespace: str, name: str) -> None:
        self.bus = Bus(nats_url, BusNames(namespace), client_name=name)
        self.lease = Lease(
            self.bus, holder=name, address=f"http://{name}", ttl=TTL, renew_every=RENEW, clock=Clock()
        )
        self.gained: list[float] = []
        self.lost: list[float] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self.bus.connect()
        self._tasks = [asyncio.create_task(self.lease.run()), asyncio.create_task(self._watch())]

    async def _watch(self) -> None:
        while True:
            await self.lease.leading.wait()
            self.gained.append(time.monotonic())
            await self.lease.following.wait()
            self.lost.append(time.monotonic())

    async def crash(self) -> None:
        """Stop without releasing (as a killed process would)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def stop(self) -> None:
        await self.crash()
        await self.lease.release()
        await self.bus.close()


@contextlib.asynccontextmanager
async def _replicas(nats_url: str, namespace: str, *names: str) -> AsyncIterator[list[_Replica]]:
    replicas = [_Replica(nats_url, namespace, name) for name in names]
    try:
        for replica in replicas:
            await replica.start()
        yield replicas
    finally:
        for replica in replicas:
            await replica.stop()


def _leaders(replicas: list[_Replica]) -> list[str]:
    return [r.lease.holder for r in replicas if r.lease.is_leader]


async def test_exactly_one_of_three_leads_and_all_name_it(nats_url: str, bus_namespace: str) -> None:
    async with _replicas(nats_url, bus_namespace, "a", "b", "c") as replicas:
        await eventually(lambda: len(_leaders(replicas)) == 1, what="one leader")
        await eventually(
            lambda: all(r.lease.leader is not None for r in replicas), what="every replica naming the leader"
        )
        leader = _leaders(replicas)[0]
        # Held for many renewals, by the same replica, with nobody else ever leading.
        for _ in range(int(2 * TTL / 0.05)):
            assert _leaders(replicas) == [leader]
            await asyncio.sleep(0.05)
        assert {r.lease.leader.holder for r in replicas if r.lease.leader is not None} == {leader}
        assert sum(len(r.gained) for r in replicas) == 1


async def test_a_released_lease_is_taken_over_at_once(nats_url: str, bus_namespace: str) -> None:
    async with _replicas(nats_url, bus_namespace, "a", "b") as (first, second):
        await eventually(lambda: first.lease.is_leader or second.lease.is_leader, what="a leader")
        leader, other = (first, second) if first.lease.is_leader else (second, first)
        stopped = time.monotonic()
        await leader.crash()
        await leader.lease.release()
        await eventually(lambda: other.lease.is_leader, within=TTL, what="the other replica leading")
        # Well before the lease would have expired: the release was seen at the next poll.
        assert other.gained[0] - stopped < TTL


async def test_a_crashed_leader_is_replaced_after_the_ttl(nats_url: str, bus_namespace: str) -> None:
    async with _replicas(nats_url, bus_namespace, "a", "b") as (first, second):
        await eventually(lambda: first.lease.is_leader or second.lease.is_leader, what="a leader")
        leader, other = (first, second) if first.lease.is_leader else (second, first)
        crashed = time.monotonic()
        await leader.crash()
        await eventually(lambda: other.lease.is_leader, within=5 * TTL, what="the other replica leading")
        gap = other.gained[0] - crashed
        # Not before the lease expired (it was renewed at most RENEW before the crash).
        assert gap >= TTL - RENEW
        print(f"takeover after a crash: {gap:.2f} s (ttl {TTL} s, poll {other.lease.poll_every} s)")


async def test_a_leader_cut_off_from_nats_steps_down_before_anyone_takes_over(
    nats_url: str, bus_namespace: str
) -> None:
    async with _replicas(nats_url, bus_namespace, "a", "b") as (first, second):
        await eventually(lambda: first.lease.is_leader or second.lease.is_leader, what="a leader")
        leader, other = (first, second) if first.lease.is_leader else (second, first)
        await leader.bus.close()  # partitioned: it cannot renew, nor learn that it lost the lease
        await eventually(lambda: other.lease.is_leader, within=5 * TTL, what="the other replica leading")
        assert leader.lost and not leader.lease.is_leader
        assert leader.lost[0] < other.gained[0]


async def test_a_restarted_replica_takes_its_own_lease_back_at_once(
    nats_url: str, bus_namespace: str
) -> None:
    async with _replicas(nats_url, bus_namespace, "a") as (first,):
        await eventually(lambda: first.lease.is_leader, what="a leading")
        await first.crash()  # the lease stays, naming "a"
    started = time.monotonic()
    async with _replicas(nats_url, bus_namespace, "a") as (again,):
        await eventually(lambda: again.lease.is_leader, within=TTL, what="the restarted replica leading")
        assert again.gained[0] - started < TTL


async def test_the_lease_names_its_holder_and_ttl(nats_url: str, bus_namespace: str) -> None:
    async with _replicas(nats_url, bus_namespace, "a") as (first,):
        await eventually(lambda: first.lease.is_leader, what="a leading")
        stored = await first.bus.read_lease()
        assert stored is not None
        value = msgspec.json.decode(stored[0], type=LeaseValue)
        assert (value.holder, value.address, value.ttl) == ("a", "http://a", TTL)
        assert value.since and value.renewed
        await eventually(lambda: _revision_grew(first.bus, stored[1]), within=5 * RENEW, what="a renewal")
    # Released on a clean stop.
    bus = Bus(first.bus.url, first.bus.names)
    await bus.connect()
    try:
        assert await bus.read_lease() is None
    finally:
        await bus.close()


async def _revision_grew(bus: Bus, revision: int) -> bool:
    stored = await bus.read_lease()
    return stored is not None and stored[1] > revision


async def test_an_unreadable_lease_is_taken_over_after_the_ttl(nats_url: str, bus_namespace: str) -> None:
    bus = Bus(nats_url, BusNames(bus_namespace))
    await bus.connect()
    try:
        await bus.write_lease(b"not json", last=None)
        async with _replicas(nats_url, bus_namespace, "a") as (first,):
            await eventually(lambda: first.lease.is_leader, within=5 * TTL, what="a taking over")
    finally:
        await bus.close()
