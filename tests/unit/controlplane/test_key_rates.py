"""The pure split of API keys' rate limits among live data planes."""

from __future__ import annotations

import pytest

from controlplane.publish.key_rates import split_key_rates


def test_no_planes_no_parts() -> None:
    assert split_key_rates({"k": 10.0}, {}) == {}


def test_idle_planes_share_evenly() -> None:
    parts = split_key_rates({"k": 10.0}, {"a": {}, "b": {}})
    assert parts == {"a": {"k": 5.0}, "b": {"k": 5.0}}


def test_demand_weighs_the_split_and_every_plane_keeps_a_floor() -> None:
    parts = split_key_rates({"k": 8.0}, {"a": {"k": 100}, "b": {}, "c": {"k": 1}})
    rates = {plane: parts[plane]["k"] for plane in parts}
    assert rates["a"] > rates["c"] > 0 and rates["b"] > 0
    assert rates["b"] >= 8.0 / (4 * 3) - 0.001  # a quarter of an even split
    assert sum(rates.values()) <= 8.0


@pytest.mark.parametrize("limit", [0.001, 0.01, 1.0, 3.0, 7.777, 1000.0])
@pytest.mark.parametrize("planes", [1, 2, 3, 7])
def test_parts_are_thousandths_and_never_add_up_to_more_than_the_limit(limit: float, planes: int) -> None:
    demand = {f"p{i}": {"k": i * 3} for i in range(planes)}
    parts = split_key_rates({"k": limit}, demand)
    rates = [parts[p]["k"] for p in demand]
    assert all(abs(r * 1000 - round(r * 1000)) < 1e-6 for r in rates)
    assert sum(rates) <= limit + 1e-9
    assert sum(rates) >= limit - planes / 1000  # nothing more than the rounding is lost


def test_unlimited_keys_are_left_out() -> None:
    assert split_key_rates({"k": 0.0}, {"a": {"k": 5}}) == {"a": {}}


def test_previous_parts_are_kept_while_close_and_dropped_when_far() -> None:
    first = split_key_rates({"k": 16.0}, {"a": {"k": 8}, "b": {"k": 8}})
    close = split_key_rates({"k": 16.0}, {"a": {"k": 9}, "b": {"k": 8}}, first)
    assert close == first
    far = split_key_rates({"k": 16.0}, {"a": {"k": 100}, "b": {}}, first)
    assert far["a"]["k"] > first["a"]["k"] + 2
    other_planes = split_key_rates({"k": 16.0}, {"a": {"k": 8}, "b": {"k": 8}, "c": {}}, first)
    assert sum(part["k"] for part in other_planes.values()) <= 16.0
    assert other_planes["c"]["k"] > 0


def test_same_inputs_same_output() -> None:
    demand = {"a": {"k": 3, "j": 1}, "b": {"k": 5}, "c": {}}
    limits = {"k": 9.5, "j": 2.0}
    assert split_key_rates(limits, demand) == split_key_rates(dict(reversed(limits.items())), demand)


def test_a_draining_plane_keeps_only_the_floor() -> None:
    demand = {"dp1": {}, "dp2": {"k": 9}}
    parts = split_key_rates({"k": 8.0}, demand, draining={"dp2"})
    assert parts == {"dp1": {"k": 7.0}, "dp2": {"k": 1.0}}  # a quarter of an even split
    # Everyone drains: split as if none did.
    assert split_key_rates({"k": 8.0}, demand, draining={"dp1", "dp2"}) == split_key_rates({"k": 8.0}, demand)
