"""The in-process measurement of what metrics cost: two real data planes over the in-memory bus, in a
child process, each serving small chats from a canned backend in alternating blocks."""

from __future__ import annotations

from ollamaflow.bench.observe_cost import measure


def test_the_cost_of_metrics_is_measured_in_a_process_of_its_own() -> None:
    cost = measure(blocks=2, per_block=200)
    assert cost.blocks == 2 and cost.requests_per_block == 200
    # CPU per request of each data plane: a small chat takes microseconds, not nothing, not seconds.
    assert 1 < cost.bare_us < 10_000 and 1 < cost.observed_us < 10_000
    assert cost.added_q1_us <= cost.added_us <= cost.added_q3_us
    assert not cost.stream


def test_streamed_chats_are_measured_too() -> None:
    # The child checks that every chat was answered 200 in the backend's twelve chunks, and fails
    # (so does measure) otherwise.
    streamed = measure(blocks=2, per_block=200, stream=True)
    assert streamed.stream and streamed.blocks == 2 and streamed.requests_per_block == 200
    assert 1 < streamed.bare_us < 10_000 and 1 < streamed.observed_us < 10_000
