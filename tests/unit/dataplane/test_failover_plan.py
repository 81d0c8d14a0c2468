"""The failover plan as plain data: the candidates a request may go to, what it tried, attempts left."""

from __future__ import annotations

from dataclasses import dataclass

from dataplane.limits.breaker import Breakers
from dataplane.proxy.failover import MAX_ATTEMPTS, Failover, candidates, spare_trials


@dataclass(frozen=True)
class B:
    id: str


A, BB, C, D = B("a"), B("b"), B("c"), B("d")


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def test_retries_allow_max_attempts_over_untried_candidates_in_order() -> None:
    plan = Failover.plan((A, BB, C, D), allow_retries=True)
    assert plan.attempts == MAX_ATTEMPTS == 3
    seen = []
    while remaining := plan.remaining():
        seen.append(remaining)
        plan.started()
        plan.failed(remaining[0])
    assert seen == [(A, BB, C, D), (BB, C, D), (C, D)]  # three attempts, then none, though d is left
    assert plan.tried == (A, BB, C)


def test_no_retries_means_one_attempt() -> None:
    plan = Failover.plan((A, BB), allow_retries=False)
    assert plan.remaining() == (A, BB)
    plan.started()
    assert not plan.may_retry()
    plan.failed(A)
    assert plan.remaining() == ()


def test_may_retry_needs_an_attempt_and_another_untried_candidate() -> None:
    plan = Failover.plan((A, BB), allow_retries=True)
    plan.started()  # on a
    assert plan.may_retry()
    plan.failed(A)
    plan.started()  # on b, the last candidate
    assert not plan.may_retry()
    single = Failover.plan((A,), allow_retries=True)
    single.started()
    assert not single.may_retry()


def test_the_admission_may_take_any_remaining_candidate_and_the_plan_passes_it_over_once_failed() -> None:
    plan = Failover.plan((A, BB, C), allow_retries=True)
    plan.started()
    plan.failed(BB)  # admission picked b (a and c were full)
    assert plan.remaining() == (A, C)


def test_candidates_leave_out_ejected_backends_but_never_leave_none() -> None:
    breakers = Breakers(Clock(), threshold=1, cooldown=10.0)
    assert candidates([A, BB, C], breakers) == (A, BB, C)
    breakers.unreachable("b", "refused")
    assert candidates([A, BB, C], breakers) == (A, C)
    breakers.unreachable("a", "refused")
    breakers.unreachable("c", "refused")
    assert candidates([A, BB, C], breakers) == (A,)  # all ejected: the first pick anyway


def test_trials_taken_for_candidates_not_used_go_back() -> None:
    clock = Clock()
    breakers = Breakers(clock, threshold=1, cooldown=10.0)
    breakers.unreachable("a", "refused")
    breakers.unreachable("b", "refused")
    clock.now += 11  # both may take one trial request
    ordered = candidates([A, BB, C], breakers)
    assert ordered == (A, BB, C)  # asking took both trials
    assert not breakers.allows("a") and not breakers.allows("b")
    spare_trials(breakers, ordered, BB)  # b was picked: a's trial goes back, b's stays taken
    assert not breakers.allows("b")
    assert breakers.allows("a")
