"""Where a request goes: the routing table built once per snapshot.

Pure: plain classes over snapshot data, no I/O. Everything a request needs that does not depend on the
request itself (host map, eligible backends per request kind, upstream header lists, response header
values, timeouts) is computed here, when a snapshot arrives, so that the hot path only looks things up.
The build is incremental: a backend whose view is unchanged keeps its prepared Target, and a frontend
whose view and backends are all unchanged keeps its whole route (pools, model index, pins), so a
revision that touches one backend of thousands costs about one backend's work plus the comparisons.

Each pool orders its candidates per request with the frontend's strategy (``dataplane.routing.strategies``)
or, for a request with a sticky-session key, by rendezvous hashing (``dataplane.routing.sticky``). Rotation
counters and the memory of moved sessions live in the pools and are carried over from the previous
table, so a new snapshot does not send the next request back to the first backend. The event loop runs
one request's ordering at a time, so a plain counter is an exact rotation under any concurrency.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from dataplane.routing.model_errors import LabelUnavailable, ModelNotFound, ModelPulling, UnknownLabel
from dataplane.routing.pins import deep_merge
from dataplane.routing.sticky import Sessions, backend_seed, sticky_order
from dataplane.routing.strategies import (
    COLD,
    UNLIMITED,
    Decision,
    least_connections,
    model_aware,
    rotated,
    warm_index,
)
from dataplane.upstream.origin import BackendHttp, prepare
from shared.errors import NoBackendAvailable, NoFrontendMatch, RequestNotAllowed
from shared.models import model_key
from shared.snapshot import ApiFormat, BackendView, FrontendView, LoadBalancing, Snapshot

__all__ = [
    "Decision",  # re-exported: callers see it as the pool's answer
    "FrontendRoute",
    "ModelNotFound",
    "ModelPulling",
    "Pool",
    "RequestKind",
    "RoutingTable",
    "Target",
    "normalize_host",
]

WILDCARD = "*"
# Client spellings of model names a pool remembers (bounds the memory a client can make it use).
SEEN_LIMIT = 1024
_NONE_IN_FLIGHT: Mapping[str, int] = {}


class RequestKind(enum.Enum):
    """What a request asks a backend to do; frontends and backends allow or forbid each kind."""

    COMPLETIONS = "completions"
    EMBEDDINGS = "embeddings"


def normalize_host(host: str) -> str:
    """The hostname part of a Host header, lower-case, without port, brackets or trailing dot."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else host
    if host.count(":") == 1:  # name:port; a bare IPv6 address has several colons and no port
        host = host.partition(":")[0]
    return host.rstrip(".")


@dataclass(frozen=True, slots=True, eq=False)
class Target:
    """One backend, prepared for the upstream leg."""

    id: str
    api_format: ApiFormat  # a client of the other format gets its requests and replies translated
    base_url: str
    headers: tuple[tuple[str, str], ...]  # the backend's own headers and its Authorization
    header_names: frozenset[bytes]  # lower-case names in ``headers``: they win over the client's
    backend_header: tuple[bytes, bytes]  # X-OllamaFlow-Backend, ready for the response
    http: BackendHttp  # origin and the fixed request-head lines
    # Model key -> the name as the backend lists it: a translated request asks for that spelling.
    model_names: Mapping[str, str] = field(default_factory=dict)
    labels: frozenset[str] = frozenset()  # lower-case: X-OllamaFlow-Label matches them exactly
    sticky_seed: int = 0  # this backend's part of sticky-session weights (``dataplane.routing.sticky``)
    dialect: str = ""  # "vllm": translated requests also carry vLLM's sampling extras

    @classmethod
    def from_backend(cls, backend: BackendView) -> Target:
        headers = list(backend.headers.items())
        if backend.bearer_token:
            headers = [(k, v) for k, v in headers if k.lower() != "authorization"]
            headers.append(("Authorization", f"Bearer {backend.bearer_token}"))
        return cls(
            id=backend.id,
            api_format=backend.api_format,
            base_url=backend.base_url.rstrip("/"),
            headers=tuple(headers),
            header_names=frozenset(k.lower().encode("latin-1", "replace") for k, _ in headers),
            backend_header=(b"x-ollamaflow-backend", backend.id.encode("latin-1", "replace")),
            http=prepare(backend.base_url, headers, (backend.querystring or "").lstrip("?")),
            model_names={model_key(name): name for name in backend.models},
            labels=frozenset(label.strip().lower() for label in backend.labels),
            sticky_seed=backend_seed(backend.id),
            dialect=backend.dialect,
        )

    def listed_name(self, model: str) -> str | None:
        """``model`` spelled as this backend lists it (None if unknown or no model was asked for)."""
        if not model or not self.model_names:
            return None
        return self.model_names.get(model_key(model))

    def head(
        self, method: bytes, path: bytes, client_query: bytes, client_lines: bytes, length: int
    ) -> bytes:
        """The request head: request line (the client's then the backend's query), the backend's
        fixed lines, the client's forwarded lines, and the body's length."""
        query = self.http.query
        if client_query:
            query = client_query + b"&" + query if query else client_query
        target = self.http.path_prefix + path + (b"?" + query if query else b"")
        return b"%s %s HTTP/1.1\r\n%s%sContent-Length: %d\r\n\r\n" % (
            method,
            target,
            self.http.fixed_lines,
            client_lines,
            length,
        )


@dataclass(slots=True, eq=False)
class Pool:
    """The backends one frontend may send one kind of request to, and the way it chooses among them.

    ``by_model`` maps each model key to the backends that may have it: those that list it and those
    whose inventory is not known yet (``unknown``; they get every model rather than none, so traffic
    is not black-holed before the first inventory). ``required`` holds the frontend's required model
    keys, which are being pulled when no backend has them yet.
    """

    targets: tuple[Target, ...]
    strategy: LoadBalancing
    rng: random.Random
    turn: int = 0  # round-robin position; carried over between snapshots
    by_model: Mapping[str, tuple[Target, ...]] = field(default_factory=dict)
    unknown: tuple[Target, ...] = ()
    required: frozenset[str] = frozenset()
    # Model names as clients spell them -> choices: spares the normalisation on the hot path.
    seen: dict[str, tuple[Target, ...]] = field(default_factory=dict)
    # Target id -> the frontend's and the backend's pins merged; only targets that have any.
    pins: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    # Target id -> its MaxParallelRequests (UNLIMITED for 0): the limits when the caller knows no share.
    limits: Mapping[str, int] = field(default_factory=dict)
    warm: Mapping[str, frozenset[str]] = field(default_factory=dict)  # model key -> ids with it loaded
    warm_seen: dict[str, frozenset[str]] = field(default_factory=dict)  # by client spelling, bounded
    sessions: Sessions | None = None  # sticky frontends only: sessions moved off a full backend
    # Lower-case labels of all the frontend's backends, serving or not: an unknown label is the client's
    # mistake (400), a known one without a backend that can serve now is a wait (503).
    labels: frozenset[str] = frozenset()

    def choices(self, model: str) -> tuple[Target, ...]:
        """The backends that may serve ``model``; raises ``ModelNotFound`` or ``ModelPulling`` if none.

        An empty name routes anywhere: the backend answers Ollama's own "model is required".
        """
        found = self.seen.get(model)
        if found is not None:
            return found
        if not model:
            return self.targets
        key = model_key(model)
        found = self.by_model.get(key, self.unknown)
        if found:
            if len(self.seen) < SEEN_LIMIT:
                self.seen[model] = found
            return found
        if key in self.required:
            raise ModelPulling(model)
        raise ModelNotFound(model)

    def labelled(self, choices: tuple[Target, ...], label: str) -> tuple[Target, ...]:
        """The ``choices`` that carry ``label`` (exact, case-insensitive); raises ``UnknownLabel`` if no
        backend of the frontend carries it, ``LabelUnavailable`` if none of those can serve now."""
        wanted = label.strip().lower()
        found = tuple(t for t in choices if wanted in t.labels)
        if not found:
            raise LabelUnavailable(label) if wanted in self.labels else UnknownLabel(label)
        return found

    def order(
        self,
        choices: tuple[Target, ...],
        *,
        model: str = "",
        in_flight: Mapping[str, int] = _NONE_IN_FLIGHT,
        limits: Mapping[str, int] | None = None,
        sticky_key: str | None = None,
        now: float = 0.0,
        peek: bool = False,
    ) -> Decision[Target]:
        """Every one of ``choices``, best first: the first is the choice, the rest the failover order.

        ``in_flight``: this data plane's requests per backend id; ``limits``: its share of each
        backend's MaxParallelRequests (default: the whole of it). ``sticky_key`` (a sticky frontend's
        session key) orders by rendezvous hashing instead of the strategy; ``now`` (monotonic seconds)
        ages the memory of moved sessions. ``peek`` (a dry-run) leaves rotation and memory as they are.
        """
        if limits is None:
            limits = self.limits
        if sticky_key is not None and self.sessions is not None:
            order, why = sticky_order(choices, sticky_key, in_flight, limits, self.sessions, now, peek=peek)
            return Decision(order, self.strategy, sticky_key=sticky_key, sticky=why)
        strategy = self.strategy
        if strategy == "Random":
            return Decision(rotated(choices, self.rng.randrange(len(choices))), strategy)
        order = rotated(choices, self.turn)
        if not peek:
            self.turn += 1
        if strategy == "RoundRobin":
            return Decision(order, strategy)
        if strategy == "LeastConnections":
            return Decision(least_connections(order, in_flight, limits), strategy)
        warm = self.warm_for(model)
        return Decision(model_aware(order, in_flight, limits, warm), strategy, warm=warm)

    def pick(self, choices: tuple[Target, ...] | None = None) -> Target:
        """The strategy's choice with nothing in flight (a shorthand for tests and simple callers)."""
        return self.order(self.targets if choices is None else choices).order[0]

    def warm_for(self, model: str) -> frozenset[str]:
        """Ids of the pool's backends that have ``model`` loaded."""
        found = self.warm_seen.get(model)
        if found is None:
            found = self.warm.get(model_key(model), COLD) if model else COLD
            if len(self.warm_seen) < SEEN_LIMIT:
                self.warm_seen[model] = found
        return found


def _model_index(
    chosen: tuple[Target, ...], backends: Mapping[str, BackendView]
) -> tuple[dict[str, tuple[Target, ...]], tuple[Target, ...]]:
    """Model key -> the chosen backends that may have it, and those whose inventory is unknown."""
    unknown = tuple(t for t in chosen if not backends[t.id].models_known)
    having: dict[str, list[Target]] = {}
    for target in chosen:
        backend = backends[target.id]
        if backend.models_known:
            # The target's model_names holds the backend's model keys, once each, in listed order.
            for key in target.model_names:
                having.setdefault(key, []).append(target)
    # Keep the pool's order within each model so rotation and failover stay predictable. The lists were
    # filled in that order; only the backends of unknown inventory need merging in.
    if not unknown:
        return {key: tuple(targets) for key, targets in having.items()}, unknown
    order = {t.id: i for i, t in enumerate(chosen)}
    by_model = {
        key: tuple(sorted((*targets, *unknown), key=lambda t: order[t.id])) for key, targets in having.items()
    }
    return by_model, unknown


def _serves(backend: BackendView, kind: RequestKind) -> bool:
    if not (backend.active and backend.healthy):
        return False
    # Either API format serves either format's clients: the proxy translates when they differ.
    return backend.allow_completions if kind is RequestKind.COMPLETIONS else backend.allow_embeddings


def _allows(frontend: FrontendView, kind: RequestKind) -> bool:
    if kind is RequestKind.COMPLETIONS:
        return frontend.allow_completions
    return frontend.allow_embeddings


def _pinned(owner: FrontendView | BackendView, kind: RequestKind) -> dict[str, object]:
    if kind is RequestKind.COMPLETIONS:
        return owner.pinned_completions_properties
    return owner.pinned_embeddings_properties


def _pool_pins(
    frontend: FrontendView, chosen: tuple[Target, ...], backends: Mapping[str, BackendView], kind: RequestKind
) -> dict[str, Mapping[str, object]]:
    """Target id -> frontend pins with the backend's laid over them, for the targets that have any.

    A model the frontend pins is left out: the proxy puts it in before routing (``pinned_models``).
    """
    ours = _pinned(frontend, kind)
    if kind in _pinned_models(frontend):
        ours = {k: v for k, v in ours.items() if k != "model"}
    merged = {t.id: deep_merge(ours, _pinned(backends[t.id], kind)) for t in chosen}
    return {i: pins for i, pins in merged.items() if pins}


def _pinned_models(frontend: FrontendView) -> dict[RequestKind, str]:
    """The model a frontend pins per request kind: requests are routed as if they asked for it."""
    models = {kind: _pinned(frontend, kind).get("model") for kind in RequestKind}
    return {kind: model for kind, model in models.items() if isinstance(model, str) and model}


@dataclass(frozen=True, slots=True, eq=False)
class FrontendRoute:
    """One active frontend with its pools and its upstream timeout."""

    frontend: FrontendView
    pools: Mapping[RequestKind, Pool]
    read_timeout: float  # seconds to wait for the next upstream byte (the first one included)
    pinned_models: Mapping[RequestKind, str] = field(default_factory=dict)
    # Lower-case request headers whose first present value keys a sticky session; () if not sticky.
    sticky_headers: tuple[bytes, ...] = ()

    def pool(self, kind: RequestKind) -> Pool:
        if not _allows(self.frontend, kind):
            raise RequestNotAllowed(f"{kind.value} requests are not permitted on this frontend")
        pool = self.pools.get(kind)
        if pool is None:
            raise NoBackendAvailable(
                f"no healthy backend can serve {kind.value} for frontend {self.frontend.id!r}"
            )
        return pool


@dataclass(frozen=True, slots=True, eq=False)
class RoutingTable:
    """Host -> frontend route, built from one snapshot."""

    revision: int = 0
    by_host: Mapping[str, FrontendRoute] = field(default_factory=dict)
    fallback: FrontendRoute | None = None
    backends: Mapping[str, BackendView] = field(default_factory=dict)  # by id, for explanations
    targets: Mapping[str, Target] = field(default_factory=dict)  # by backend id, kept when unchanged
    by_frontend: Mapping[str, FrontendRoute] = field(default_factory=dict)  # routes by frontend id

    def frontend_for(self, host: str) -> FrontendRoute:
        route = self.by_host.get(normalize_host(host), self.fallback)
        if route is None:
            raise NoFrontendMatch(f"no frontend serves host {normalize_host(host)!r}")
        return route

    @classmethod
    def build(
        cls, snapshot: Snapshot, *, previous: RoutingTable | None = None, rng: random.Random | None = None
    ) -> RoutingTable:
        rng = rng or random.Random()
        previous = previous or RoutingTable()
        backends = {b.id: b for b in snapshot.content.backends}
        targets: dict[str, Target] = {}
        changed = previous.backends.keys() - backends.keys()  # removed ones count as changed
        for backend in snapshot.content.backends:
            kept = previous.targets.get(backend.id)
            if kept is not None and previous.backends.get(backend.id) == backend:
                targets[backend.id] = kept
            else:
                targets[backend.id] = Target.from_backend(backend)
                changed.add(backend.id)
        turns: dict[tuple[str, RequestKind], int] | None = None
        moved: dict[tuple[str, RequestKind], Sessions] | None = None
        by_host: dict[str, FrontendRoute] = {}
        by_frontend: dict[str, FrontendRoute] = {}
        for frontend in snapshot.content.frontends:  # canonical order (by id): duplicates resolve stably
            host = normalize_host(frontend.hostname) if frontend.hostname != WILDCARD else WILDCARD
            if not frontend.active or host in by_host:
                continue
            kept_route = previous.by_frontend.get(frontend.id)
            if (
                kept_route is not None
                and kept_route.frontend == frontend
                and not any(i in changed for i in frontend.backends)
            ):
                by_host[host] = by_frontend[frontend.id] = kept_route  # its pools go on as they were
                continue
            if turns is None or moved is None:
                turns, moved = previous.turns(), previous.sessions()
            pools: dict[RequestKind, Pool] = {}
            required = frozenset(model_key(name) for name in frontend.required_models)
            labels = frozenset(tag for i in frontend.backends if i in targets for tag in targets[i].labels)
            for kind in RequestKind:
                chosen = tuple(
                    targets[i] for i in frontend.backends if i in backends and _serves(backends[i], kind)
                )
                if chosen:
                    turn = turns.get((frontend.id, kind), 0)
                    by_model, unknown = _model_index(chosen, backends)
                    sessions = None
                    if frontend.use_sticky_sessions:
                        sessions = moved.get((frontend.id, kind)) or Sessions(0.0)
                        sessions.ttl = frontend.sticky_session_expiration_ms / 1000.0
                    pools[kind] = Pool(
                        chosen,
                        frontend.load_balancing,
                        rng,
                        turn,
                        by_model,
                        unknown,
                        required,
                        pins=_pool_pins(frontend, chosen, backends, kind),
                        limits={t.id: backends[t.id].max_parallel_requests or UNLIMITED for t in chosen},
                        warm=warm_index((t.id, backends[t.id].models_loaded) for t in chosen),
                        sessions=sessions,
                        labels=labels,
                    )
            sticky = frontend.sticky_headers if frontend.use_sticky_sessions else ()
            by_host[host] = by_frontend[frontend.id] = FrontendRoute(
                frontend,
                pools,
                frontend.timeout_ms / 1000.0,
                pinned_models=_pinned_models(frontend),
                sticky_headers=tuple(h.strip().lower().encode("latin-1", "replace") for h in sticky),
            )
        fallback = by_host.pop(WILDCARD, None)
        return cls(
            revision=snapshot.revision,
            by_host=by_host,
            fallback=fallback,
            backends=backends,
            targets=targets,
            by_frontend=by_frontend,
        )

    def routes(self) -> list[FrontendRoute]:
        return [*self.by_host.values(), *([self.fallback] if self.fallback else [])]

    def turns(self) -> dict[tuple[str, RequestKind], int]:
        return {(r.frontend.id, kind): pool.turn for r in self.routes() for kind, pool in r.pools.items()}

    def sessions(self) -> dict[tuple[str, RequestKind], Sessions]:
        """The memory of moved sessions per (frontend, kind), carried into the next table."""
        return {
            (r.frontend.id, kind): pool.sessions
            for r in self.routes()
            for kind, pool in r.pools.items()
            if pool.sessions is not None
        }
