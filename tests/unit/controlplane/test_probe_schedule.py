"""The probe schedule: each backend at a phase of its own, many backends spread over the interval."""

from __future__ import annotations

import pytest

from controlplane.health.schedule import next_probe, phase


def test_a_thousand_backends_spread_evenly_over_the_interval() -> None:
    interval = 5.0
    buckets = [0] * 10
    for i in range(1000):
        offset = phase(f"b{i:05d}", interval)
        assert 0 <= offset < interval
        buckets[int(offset / interval * 10)] += 1
    # Evenly spread: every tenth of the interval holds about a tenth of them (none bunched together).
    assert min(buckets) >= 70 and max(buckets) <= 130, buckets


def test_the_phase_is_stable_and_differs_between_backends() -> None:
    assert phase("backend-a", 5.0) == phase("backend-a", 5.0)
    assert phase("backend-a", 5.0) != phase("backend-b", 5.0)
    assert phase("backend-a", 10.0) == pytest.approx(2 * phase("backend-a", 5.0))


@pytest.mark.parametrize("ident", ["a", "b00001", "flip", "x" * 200])
@pytest.mark.parametrize("now", [0.0, 3.7, 12345.678])
def test_the_first_pause_is_half_to_one_and_a_half_intervals_then_exactly_one(ident: str, now: float) -> None:
    interval = 5.0
    due = next_probe(ident, interval, now)
    assert now + interval / 2 < due <= now + 1.5 * interval
    assert (due - phase(ident, interval)) / interval == pytest.approx(
        round((due - phase(ident, interval)) / interval)
    )
    # Then every interval, whatever the probe took (less than half an interval).
    for took in (0.0, 0.01, 2.4):
        following = next_probe(ident, interval, due + took)
        assert following == pytest.approx(due + interval)
        due = following


def test_a_probe_longer_than_half_the_interval_skips_to_a_later_slot() -> None:
    due = next_probe("a", 1.0, 0.0)
    assert next_probe("a", 1.0, due + 0.6) == pytest.approx(due + 2.0)


def test_no_interval_means_now() -> None:
    assert next_probe("a", 0.0, 7.0) == 7.0
