"""The data plane's metrics count ended requests in batches: a full batch, a batch that keeps too many
bytes of final chunks, and a scrape each count what waits at once; what a batch keeps of a request."""

from __future__ import annotations

import asyncio
import sys
from time import perf_counter
from typing import Any

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
    assert guard._task is None and guard._receive is None  # kept by a batch, it holds no request


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
