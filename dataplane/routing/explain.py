"""Why a request went where it went: the opt-in debug header and the routing dry-run.

Pure: builds values from a routing table, a ``Decision`` and load figures handed in; no I/O, no clock.

- A client that sends ``X-OllamaFlow-Explain: 1`` gets ``X-OllamaFlow-Route`` on the response, e.g.
  ``strategy=ModelAware; candidates=b[0/2 warm],a[1/2],c[2/2 full]; chosen=b; served=a; failed=b``:
  the strategy, the candidates in the order they were to be tried (with this data plane's requests in
  flight on each / its share of the limit, and whether the model is loaded there), the strategy's
  choice, the backend that served, the ones that failed before it, the sticky-session key's hash and
  what became of the session, and the time spent queued. Nothing of it is computed without the header.
- ``dry_run`` answers the control plane's ``ExplainRequest`` the way the proxy would route such a
  request now, without sending anything anywhere and without moving any rotation or session.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import msgspec

from dataplane.routing.sticky import session_key, short_hash
from dataplane.routing.strategies import UNLIMITED
from dataplane.routing.table import Decision, Pool, RequestKind, RoutingTable, Target
from shared.errors import OllamaFlowError
from shared.snapshot import BackendView
from shared.wire.explain import ExplainCandidate, ExplainReply, ExplainRequest

__all__ = ["ROUTE_HEADER", "dry_run", "route_header"]

ROUTE_HEADER = b"x-ollamaflow-route"
LABEL_HEADER = b"x-ollamaflow-label"
# Longest header value we send: proxies and clients reject huge header lines.
MAX_HEADER = 4000

LimitOf = Callable[[str], int]


def _clean(text: str) -> str:
    # Backend ids are the operator's; keep the header a single printable line whatever they are.
    return "".join(c if " " <= c <= "~" and c not in ";,[]" else "?" for c in text)


def _candidate(target: Target, in_flight: Mapping[str, int], limit: int, warm: frozenset[str]) -> str:
    used = in_flight.get(target.id, 0)
    notes = " warm" if target.id in warm else ""
    if used >= limit:
        notes += " full"
    shown = "unlimited" if limit >= UNLIMITED else limit
    return f"{_clean(target.id)}[{used}/{shown}{notes}]"


def route_header(
    decision: Decision[Target],
    *,
    in_flight: Mapping[str, int],
    limit_of: LimitOf,
    served: Target | None,
    failed: Iterable[Target] = (),
    queued_ms: int = -1,
) -> tuple[bytes, bytes]:
    """The ``X-OllamaFlow-Route`` header for one request."""
    order = decision.order
    strategy = "Sticky" if decision.sticky_key is not None else decision.strategy
    parts = [
        f"strategy={strategy}",
        "candidates=" + ",".join(_candidate(t, in_flight, limit_of(t.id), decision.warm) for t in order),
        f"chosen={_clean(order[0].id)}" if order else "chosen=",
    ]
    if served is not None:
        parts.append(f"served={_clean(served.id)}")
    failures = [_clean(t.id) for t in failed]
    if failures:
        parts.append("failed=" + ",".join(failures))
    if decision.sticky_key is not None:
        parts.append(f"sticky={short_hash(decision.sticky_key)} {decision.sticky}")
    if queued_ms >= 0:
        parts.append(f"queued_ms={queued_ms}")
    value = "; ".join(parts)
    if len(value) > MAX_HEADER:
        value = value[: MAX_HEADER - 3] + "..."
    return ROUTE_HEADER, value.encode("latin-1", "replace")


def _not_serving(backend: BackendView | None, kind: RequestKind) -> str:
    """Why a backend of the frontend is not in the pool at all ("" if it is)."""
    if backend is None:
        return "unknown backend"
    if not backend.active:
        return "inactive"
    if backend.secrets_withheld:
        return "its secrets cannot be opened here (see this data plane's SnapshotError)"
    if not backend.healthy:
        return "unhealthy" if backend.health_checked else "not probed yet"
    allowed = backend.allow_completions if kind is RequestKind.COMPLETIONS else backend.allow_embeddings
    return "" if allowed else f"does not serve {kind.value}"


def dry_run(
    table: RoutingTable,
    request: ExplainRequest,
    *,
    dataplane: str,
    in_flight: Mapping[str, int],
    limit_of: LimitOf,
    ejected: Mapping[str, str],
) -> ExplainReply:
    """What this data plane would do with ``request`` now; errors come back in the reply."""
    reply = ExplainReply(dataplane=dataplane, revision=table.revision)
    try:
        route = table.frontend_for(request.host)
    except OllamaFlowError as exc:
        return _failed(reply, exc)
    frontend = route.frontend
    kind = RequestKind(request.kind)
    headers = [
        (name.strip().lower().encode("latin-1", "replace"), value.encode("latin-1", "replace"))
        for name, value in request.headers.items()
    ]
    key = session_key(headers, route.sticky_headers) if route.sticky_headers else None
    model = route.pinned_models.get(kind) or request.model
    label = next((v.decode("latin-1").strip() for k, v in headers if k == LABEL_HEADER), "")
    reply = msgspec.structs.replace(
        reply,
        frontend=frontend.id,
        strategy=frontend.load_balancing,
        sticky_key=short_hash(key) if key is not None else "",
    )
    pool: Pool | None = None
    having: tuple[Target, ...] = ()  # may have the model
    choices: tuple[Target, ...] = ()  # ... and carry the label
    error: OllamaFlowError | None = None
    try:
        pool = route.pool(kind)
        having = choices = pool.choices(model)
        if label:
            choices = pool.labelled(having, label)
    except OllamaFlowError as exc:
        error = exc
    order: list[Target] = []
    if pool is not None and choices:
        limits = {t.id: limit_of(t.id) for t in choices}
        decision = pool.order(
            choices, model=model, in_flight=in_flight, limits=limits, sticky_key=key, peek=True
        )
        ordered = decision.order
        # Like the proxy: ejected backends are passed over, unless that leaves none.
        order = [t for t in ordered if t.id not in ejected] or [ordered[0]]
    ranks = {t.id: i for i, t in enumerate(order)}
    warm = pool.warm_for(model) if pool is not None else frozenset()
    pooled = {t.id for t in pool.targets} if pool is not None else set()
    has_model = {t.id for t in having}
    candidates = []
    for backend_id in dict.fromkeys(frontend.backends):
        rank = ranks.get(backend_id)
        limit, used = limit_of(backend_id), in_flight.get(backend_id, 0)
        if rank is not None:
            why = "choice" if rank == 0 else f"failover {rank}"
            why += ", full" if used >= limit else ""
        elif backend_id in ejected:
            why = f"ejected by this data plane: {ejected[backend_id]}"
        elif backend_id not in pooled:
            why = _not_serving(table.backends.get(backend_id), kind) or "not in the pool"
        elif backend_id not in has_model:
            why = f"does not have model {model!r}"
        else:
            why = f"no label {label!r}"
        candidates.append(
            ExplainCandidate(
                backend=backend_id,
                eligible=rank is not None,
                reason=why,
                in_flight=used,
                limit=0 if limit >= UNLIMITED else limit,  # 0: no limit, as in the admin API
                loaded=backend_id in warm,
            )
        )
    reply = msgspec.structs.replace(reply, order=[t.id for t in order], candidates=candidates)
    return _failed(reply, error) if error is not None else reply


def _failed(reply: ExplainReply, exc: OllamaFlowError) -> ExplainReply:
    return msgspec.structs.replace(reply, status=exc.status, error=exc.message)
