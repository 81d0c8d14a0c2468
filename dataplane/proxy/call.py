"""One proxied request once it is known to be acceptable, and the upstream request it becomes.

``upstream_request`` builds, for one chosen backend, the head and body that go to it: the path and body
in the backend's own format (translated when a ``Crossing`` is given), the model spelled as the backend
lists it, the pool's pins laid over the body, and the client's headers minus those the backend's own
configuration replaces.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dataplane.http.disconnect import DisconnectGuard
from dataplane.observe.tracing import RequestTrace
from dataplane.proxy.crossing import Crossing
from dataplane.proxy.failover import Failover
from dataplane.routing.pins import apply_pins, with_model
from dataplane.routing.table import Decision, FrontendRoute, Pool, RequestKind, Target
from shared.snapshot import ApiFormat

__all__ = ["Call", "Endpoint", "own_lines", "upstream_request"]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A proxied path: what it asks of a backend and which API format its client speaks."""

    path: str
    kind: RequestKind
    api_format: ApiFormat
    path_bytes: bytes = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path_bytes", self.path.encode("ascii"))


@dataclass(slots=True, eq=False)  # compared and hashed by identity: the live requests are a set
class Call:
    """One proxied request, once it is known to be acceptable; once it ended, what its metrics, access
    log line and trace read (a ``dataplane.observe.ended.Ended``)."""

    endpoint: Endpoint
    method: bytes
    path: bytes
    query: bytes
    route: FrontendRoute
    pool: Pool
    choices: tuple[Target, ...]  # the pool's backends that may have the requested model
    model: str
    forward: list[tuple[bytes, bytes]]  # the client's headers that go upstream
    own_lines: bytes  # X-Forwarded-For and X-OllamaFlow-Request, serialised
    body: bytes
    id_header: tuple[bytes, bytes]
    guard: DisconnectGuard  # it also notes what went to the client (a dataplane.http.sent.Sent)
    started: float  # perf_counter() when the request arrived
    frontend_id: str
    failover: Failover[Target] | None = None  # its candidates, those that failed, attempts left
    queued: float = -1.0  # seconds spent in the queue; -1 if it never waited
    sticky_key: str | None = None  # a sticky frontend's session key, if the client sent one
    explain: bool = False  # the client asked for X-OllamaFlow-Route
    decision: Decision[Target] | None = None  # kept only when explain
    served: Target | None = None  # the backend of the answer (or of the last attempt)
    relay: str = ""  # how the answer went: "passthrough", "translated" or "local" (metrics, access log)
    rejected: bool = False  # a full queue or an expired wait turned it away
    ended_at: float = 0.0  # perf_counter() when it ended (once observed)
    tokens: tuple[int, int] | None = None  # its answer's token counts, once read (observed)
    trace: RequestTrace | None = None  # its spans, when traces are on (dataplane.observe.tracing)

    @property
    def tried(self) -> tuple[Target, ...]:
        """The candidates that failed before their answer reached the client."""
        return self.failover.tried if self.failover is not None else ()

    @property
    def request_id(self) -> str:
        """X-OllamaFlow-Request's value: log lines and generic client errors name it."""
        return self.id_header[1].decode()


def own_lines(forwarded_for: bytes, request_id: bytes) -> bytes:
    """The upstream header lines the proxy adds itself."""
    if forwarded_for:
        return b"X-Forwarded-For: %s\r\nX-OllamaFlow-Request: %s\r\n" % (forwarded_for, request_id)
    return b"X-OllamaFlow-Request: %s\r\n" % request_id


def _as_listed(body: bytes, model: str, target: Target) -> bytes:
    """The body with the model named exactly as an OpenAI-compatible backend lists it.

    Ollama accepts ``llama3.2`` for ``llama3.2:latest``; OpenAI-compatible servers want the exact
    name. Only a body whose spelling differs is re-encoded; the usual one passes untouched.
    """
    listed = target.listed_name(model)
    if listed is None or listed == model:
        return body
    return with_model(body, listed)


def upstream_request(call: Call, target: Target, crossing: Crossing | None) -> tuple[bytes, bytes]:
    """The request head and body that go to ``target`` for ``call``."""
    forward, path, body = call.forward, call.path, call.body
    if crossing is not None:
        path, body = crossing.backend_call.path.encode("ascii"), crossing.backend_call.body
        # The reply gets rewritten, so it must come uncompressed.
        forward = [h for h in forward if h[0] != b"accept-encoding"]
    elif target.api_format == "OpenAI" and call.model:
        body = _as_listed(body, call.model, target)
    if call.pool.pins:  # pins apply to the body in the backend's own format
        pins = call.pool.pins.get(target.id)
        if pins:
            body = apply_pins(body, pins)
    if target.header_names:  # the backend's configured headers win over the client's
        forward = [h for h in forward if h[0] not in target.header_names]
    own = call.own_lines
    if call.trace is not None and call.trace.header:  # our attempt's traceparent replaces the client's
        forward = [h for h in forward if h[0] != b"traceparent"]
        own += call.trace.header
    lines = b"".join([b"%s: %s\r\n" % h for h in forward])
    return target.head(call.method, path, call.query, lines + own, len(body)), body
