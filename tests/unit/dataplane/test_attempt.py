"""An attempt gives its backend's slot back and settles its breaker exactly once, however it ends."""

from __future__ import annotations

import asyncio

import pytest

from dataplane.limits.admission import Admission
from dataplane.limits.breaker import Breakers
from dataplane.limits.traffic import Traffic
from dataplane.proxy.attempt import Attempt
from dataplane.routing.table import Target
from shared.snapshot import BackendView, SnapshotContent, seal


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


class Slots:
    """Traffic, admission and breakers of one backend ``a`` with two slots."""

    def __init__(self, threshold: int = 2) -> None:
        view = BackendView(id="a", base_url="http://127.0.0.1:9", max_parallel_requests=2)
        self.target = Target.from_backend(view)
        self.clock = Clock()
        self.traffic = Traffic()
        self.admission = Admission("dp", clock=self.clock)
        content = SnapshotContent(backends=(view,))
        self.admission.refresh(seal(content, revision=1, generated_at="2025-01-01T00:00:00Z"))
        self.breakers = Breakers(self.clock, threshold=threshold, cooldown=10.0)

    def attempt(self) -> Attempt:
        assert self.admission.admit([self.target]) is self.target
        return Attempt(self.target, self.traffic, self.admission, self.breakers)

    @property
    def taken(self) -> tuple[int, int]:
        """(in flight, admission slots taken) of backend a."""
        gate = self.admission.gates.gate("a")
        assert gate is not None
        return self.traffic.in_flight.get("a", 0), gate.in_flight


async def test_the_slot_goes_back_once_however_often_the_attempt_ends() -> None:
    slots = Slots()
    other = slots.attempt()  # keeps one slot: a second give-back would show on it
    async with slots.attempt() as attempt:
        assert slots.taken == (2, 2)
        attempt.end()
        assert slots.taken == (1, 1)
    assert slots.taken == (1, 1)
    other.end()
    assert slots.taken == (0, 0)


async def test_a_5xx_whose_body_then_breaks_is_one_server_error() -> None:
    slots = Slots(threshold=2)
    async with slots.attempt() as attempt:
        assert not attempt.answered(500)
        attempt.server_error("the body broke off")
    assert slots.breakers.ejected() == {}  # one error of two
    async with slots.attempt() as attempt:
        attempt.answered(503)
    assert "a" in slots.breakers.ejected()


async def test_an_unreachable_backend_is_ejected_once() -> None:
    slots = Slots()
    async with slots.attempt() as attempt:
        attempt.unreachable("refused")
        attempt.server_error("and again")  # no second verdict
    assert slots.breakers.ejections == {"a": 1}
    assert slots.taken == (0, 0)


async def test_an_answer_that_breaks_after_its_success_is_a_server_error() -> None:
    slots = Slots(threshold=1)
    async with slots.attempt() as attempt:
        assert attempt.answered(200)
        attempt.server_error("broke before reaching the client")
    assert "a" in slots.breakers.ejected()


async def _trial(slots: Slots) -> None:
    """Eject ``a``, let its cool-down pass and take its one trial request."""
    slots.breakers.unreachable("a", "refused")
    slots.clock.now += 11
    assert slots.breakers.allows("a")
    assert not slots.breakers.allows("a")


@pytest.mark.parametrize("raised", [ValueError("translation failed"), asyncio.CancelledError()])
async def test_an_exception_gives_back_the_slot_and_the_trial(raised: BaseException) -> None:
    slots = Slots()
    await _trial(slots)
    with pytest.raises(type(raised)):
        async with slots.attempt():
            raise raised
    assert slots.taken == (0, 0)
    assert slots.breakers.allows("a")  # the trial may go again


async def test_a_cancelled_task_ends_its_attempt() -> None:
    slots = Slots()
    await _trial(slots)
    entered = asyncio.Event()

    async def waits_for_its_answer() -> None:
        async with slots.attempt():
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(waits_for_its_answer())
    await entered.wait()
    assert slots.taken == (1, 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert slots.taken == (0, 0)
    assert slots.breakers.allows("a")


async def test_a_trial_that_succeeds_closes_the_breaker_as_its_answer_begins() -> None:
    slots = Slots()
    await _trial(slots)
    async with slots.attempt() as attempt:
        attempt.answered(200)
        assert slots.breakers.ejected() == {}
