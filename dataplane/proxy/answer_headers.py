"""The headers the proxy adds to an answer: the backend that served it, the request's id, the time it
waited in the queue (X-OllamaFlow-Queue-Ms, when it waited) and, for a client that sent
X-OllamaFlow-Explain, how it was routed (X-OllamaFlow-Route, ``dataplane.routing.explain``)."""

from __future__ import annotations

from collections.abc import Mapping

from dataplane.limits.gates import Gates
from dataplane.proxy.call import Call
from dataplane.routing.explain import route_header
from dataplane.routing.table import Target

__all__ = ["QUEUE_HEADER", "answer_headers", "error_headers"]

QUEUE_HEADER = b"x-ollamaflow-queue-ms"

Headers = list[tuple[bytes, bytes]]


def answer_headers(call: Call, target: Target, in_flight: Mapping[str, int], gates: Gates) -> Headers:
    """The headers of ``target``'s answer (or of a local one given in its name)."""
    if call.queued < 0 and call.decision is None:
        return [target.backend_header, call.id_header]
    headers = [target.backend_header, call.id_header, *_queue_header(call)]
    if call.decision is not None:
        headers.append(_route_header(call, target, in_flight, gates))
    return headers


def error_headers(call: Call, in_flight: Mapping[str, int], gates: Gates, *, routed: bool = True) -> Headers:
    """The headers of an error answer of the proxy's own; the route's only if ``routed``."""
    headers = [call.id_header, *_queue_header(call)]
    if routed and call.decision is not None:
        headers.append(_route_header(call, None, in_flight, gates))
    return headers


def _queue_header(call: Call) -> Headers:
    return [] if call.queued < 0 else [(QUEUE_HEADER, b"%d" % round(call.queued * 1000))]


def _route_header(
    call: Call, served: Target | None, in_flight: Mapping[str, int], gates: Gates
) -> tuple[bytes, bytes]:
    assert call.decision is not None
    limits = call.pool.limits

    def limit_of(backend_id: str) -> int:
        gate = gates.gate(backend_id)
        return gate.max_parallel if gate is not None else limits.get(backend_id, 0)

    queued_ms = -1 if call.queued < 0 else round(call.queued * 1000)
    return route_header(
        call.decision,
        in_flight=in_flight,
        limit_of=limit_of,
        served=served,
        failed=call.tried,
        queued_ms=queued_ms,
    )
