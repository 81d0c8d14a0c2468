"""The data plane's metrics count ended requests in batches: a full batch, a batch that keeps too many
bytes of final chunks, and a scrape each count what waits at once; what a batch keeps of a request."""

from __future__ import annotations

import asyncio
import sys
from time import perf_counter
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dataplane.http.disconnect import DisconnectWatch
from dataplane.http.sent import Sent
from dataplane.observe.ended import EarlyAnswer
from dataplane.observe.metrics import BATCH, MAX_KEPT, DataPlaneMetrics
from dataplane.proxy.call import Endpoint
from dataplane.routing.table import RequestKind

CHAT = Endpoint("/api/chat", RequestKind.COMPLETIONS, "Ollama")


async def _send(message: Any) -> None:
    return None


def _refused(metrics: DataPlaneMetrics, body: bytes = b'{"error":"no"}') -> None:
    answer = EarlyAnswer(_send, CHAT, perf_counter(), "id", "all", "llama3.2", None)
    answer.guard.whole(404, body)
    answer.ended_at = perf_counter()
    metrics.observe(answer)


def _requests(metrics: DataPlaneMetrics) -> float:
    text = generate_latest(metrics.registry).decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "ollamaflow_dataplane_requests"
        for sample in family.samples
    )


def test_a_full_batch_is_counted_at_once() -> None:
    metrics = DataPlaneMetrics()
    for _ in range(BATCH - 1):
        _refused(metrics)
    assert metrics.waiting == BATCH - 1
    _refused(metrics)
    assert metrics.waiting == 0
    assert _requests(metrics) == BATCH


def test_a_batch_ends_once_the_final_chunks_it_keeps_are_too_large() -> None:
    metrics = DataPlaneMetrics()
    _refused(metrics, b"x" * (MAX_KEPT // 2))
    assert metrics.waiting == 1
    _refused(metrics, b"x" * (MAX_KEPT // 2 + 1))
    assert metrics.waiting == 0
    _refused(metrics)
    assert metrics.waiting == 1


def test_a_scrape_counts_what_waits() -> None:
    metrics = DataPlaneMetrics()
    _refused(metrics)
    _refused(metrics)
    assert _requests(metrics) == 2
    assert metrics.waiting == 0


async def test_a_guard_starts_as_a_fresh_sent_and_lets_its_request_go_once_closed() -> None:
    # DisconnectGuard sets Sent's fields itself: a field added to Sent must be set there too.
    task = asyncio.current_task()
    assert task is not None
    guard = DisconnectWatch().guard(_receive, task)
    fresh = Sent()
    assert {name: getattr(guard, name) for name in Sent.__slots__} == {
        name: getattr(fresh, name) for name in Sent.__slots__
    }
    guard.close()
    assert guard._task is None and guard._receive is None  # read after the end, it holds no request


async def _receive() -> dict[str, Any]:
    return {"type": "http.disconnect"}


def test_a_batch_keeps_what_it_counts_not_the_request() -> None:
    metrics = DataPlaneMetrics()
    answer = EarlyAnswer(_send, CHAT, perf_counter(), "id", "all", "llama3.2", None)
    answer.guard.whole(404, b'{"error":"no"}')
    answer.ended_at = perf_counter()
    held, sent_held = sys.getrefcount(answer), sys.getrefcount(answer.guard)
    metrics.observe(answer)
    assert metrics.waiting == 1
    # The request and its notes go as soon as their sender lets go; the batch holds copies of fields.
    now, sent_now = sys.getrefcount(answer), sys.getrefcount(answer.guard)  # read before assert's own
    assert (now, sent_now) == (held, sent_held)
    assert _requests(metrics) == 1


class _Backend:
    """What the counting reads of a backend: its id (compared by identity, as snapshot targets are)."""

    def __init__(self, backend_id: str) -> None:
        self.id = backend_id


class _Ended:
    """An ended request whose every field the counting reads holds a value of its own."""

    def __init__(self) -> None:
        self.endpoint = CHAT
        self.started = 10.0
        self.ended_at = 10.3
        self.request_id = "id"
        self.frontend_id = "front"
        self.model = "llama3.2"
        self.guard = Sent()
        self.guard.status = 200
        self.guard.chunk(b'{"message":{"content":"hi"},"done":false}\n')
        self.guard.chunk(b'{"done":true,"prompt_eval_count":12,"eval_count":9}\n')
        self.guard.first_at = 10.1
        self.guard.client_gone = True
        self.served = _Backend("sim")
        self.relay = "passthrough"
        self.queued = 0.02
        self.tried = (_Backend("down"),)
        self.rejected = False  # unlike client_gone: the two are told apart
        self.tokens: tuple[int, int] | None = None
        self.trace = None


def _samples(metrics: DataPlaneMetrics) -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def test_each_field_of_an_ended_request_counts_where_it_belongs() -> None:
    metrics = DataPlaneMetrics()
    metrics.observe(_Ended())  # type: ignore[arg-type]
    found = _samples(metrics)
    prefix = "ollamaflow_dataplane_"
    [(labels, value)] = found[prefix + "requests_total"]
    assert value == 1
    assert labels == {
        "frontend": "front",
        "backend": "sim",
        "model": "llama3.2",
        "endpoint": "/api/chat",
        "client_format": "ollama",
        "status": "200",
        "relay": "passthrough",
    }
    assert found[prefix + "request_duration_seconds_sum"][0][1] == pytest.approx(0.3)
    assert found[prefix + "time_to_first_byte_seconds_sum"][0][1] == pytest.approx(0.1)
    assert found[prefix + "queue_wait_seconds_sum"][0][1] == pytest.approx(0.02)
    assert found[prefix + "input_tokens_total"][0][1] == 12
    assert found[prefix + "output_tokens_total"][0][1] == 9
    # Streamed (two chunks): 9 tokens from the first byte (10.1) to the end (10.3).
    assert found[prefix + "output_tokens_per_second_sum"][0][1] == pytest.approx(45.0)
    assert found[prefix + "retries_total"] == [({"frontend": "front", "backend": "down"}, 1.0)]
    assert found[prefix + "failovers_total"] == [({"frontend": "front"}, 1.0)]
    assert found[prefix + "client_disconnects_total"] == [({"frontend": "front", "backend": "sim"}, 1.0)]
    assert prefix + "rejected_requests_total" not in found
