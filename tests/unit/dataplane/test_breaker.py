"""The passive-health circuit breaker as a pure state machine, on a clock the test moves."""

from __future__ import annotations

from dataplane.limits.breaker import Breakers


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_failed_connection_ejects_at_once_and_a_trial_follows_the_cooldown() -> None:
    clock = Clock()
    breakers = Breakers(clock, threshold=3, cooldown=10.0)
    assert breakers.allows("a")
    breakers.unreachable("a", "connection refused")
    assert not breakers.allows("a") and breakers.allows("b")
    assert breakers.ejected() == {"a": "connection refused"}
    clock.now += 9.9
    assert not breakers.allows("a")
    clock.now += 0.2
    assert breakers.allows("a")  # the one trial request
    assert not breakers.allows("a")  # nobody else while it is under way
    breakers.succeeded("a")
    assert breakers.allows("a") and breakers.allows("a")
    assert breakers.ejected() == {}


def test_a_failed_trial_ejects_for_another_cooldown() -> None:
    clock = Clock()
    breakers = Breakers(clock, cooldown=5.0)
    breakers.unreachable("a", "refused")
    clock.now += 5
    assert breakers.allows("a")
    breakers.server_error("a", "status 500")
    assert not breakers.allows("a")
    assert breakers.ejected() == {"a": "status 500"}
    clock.now += 5
    assert breakers.allows("a")


def test_server_errors_eject_only_when_they_come_in_a_row() -> None:
    breakers = Breakers(Clock(), threshold=3)
    breakers.server_error("a", "status 500")
    breakers.server_error("a", "status 502")
    breakers.succeeded("a")  # the run is broken
    breakers.server_error("a", "status 500")
    breakers.server_error("a", "status 500")
    assert breakers.allows("a")
    breakers.server_error("a", "status 503")
    assert not breakers.allows("a")
    assert breakers.ejected() == {"a": "3 server errors in a row; last: status 503"}
