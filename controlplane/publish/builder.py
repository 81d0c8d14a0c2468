"""PURE: configuration rows and the live data-plane set -> the snapshot content data planes route by.

No I/O, no clock, no ORM import: rows are read through the small protocols below (the SQLModel tables
satisfy them), so this module can be tested with plain objects and is checked by import-linter.
Every frontend and backend is carried, inactive ones too, with its ``active`` flag; the data plane
decides what an inactive one means. Each backend's runtime state (health, models) comes from the
``runtime`` lookup; without one (probing switched off) every backend is published as healthy.
Each live data plane carries its share of every backend's limits (``controlplane.publish.shares``)
and of every API key's rate (``controlplane.publish.key_rates``); a draining one keeps only what it
still runs. Active API keys are published as their digests only, and the admin tokens as theirs (data
planes honour route explanations for them). Backend secrets are sealed with the fleet's secrets key
(``shared.secret_box``, deterministic, so equal rows still give equal content), never put in clear.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from controlplane.publish.key_rates import split_key_rates
from controlplane.publish.shares import Limits, ShareMemo, split_shares
from shared.secret_box import BackendSecrets
from shared.snapshot import (
    ApiKeyView,
    BackendShare,
    BackendView,
    ClusterView,
    DataPlaneView,
    FrontendView,
    LoadedModel,
    SnapshotContent,
)

__all__ = [
    "UNPROBED",
    "ApiKeyRecord",
    "BackendRecord",
    "BackendRuntime",
    "FrontendRecord",
    "ViewMemo",
    "backend_base_url",
    "backend_secrets",
    "build_content",
    "key_rates_of",
    "shares_of",
]


@dataclass(frozen=True, slots=True)
class BackendRuntime:
    """What the control plane has observed of one backend (not configuration)."""

    healthy: bool = True
    checked: bool = False
    models: tuple[str, ...] = ()
    models_known: bool = False
    models_loaded: tuple[LoadedModel, ...] = ()
    dialect: str = ""  # "vllm" when the backend's /v1/models says so (``BackendView.dialect``)


UNPROBED = BackendRuntime()
"""The runtime state of a backend nobody probes: trusted to be healthy, models unknown."""


class FrontendRecord(Protocol):
    identifier: str
    name: str | None
    hostname: str
    load_balancing: str
    backends: Sequence[str]
    required_models: Sequence[str]
    timeout_ms: int
    max_request_body_size: int
    use_sticky_sessions: bool
    sticky_session_expiration_ms: int
    pinned_embeddings_properties: Mapping[str, Any]
    pinned_completions_properties: Mapping[str, Any]
    allow_embeddings: bool
    allow_completions: bool
    allow_retries: bool
    active: bool
    sticky_headers: Sequence[str]
    queue_size: int
    queue_timeout_ms: int
    allow_model_management: bool
    model_management_requires_key: bool
    pull_adds_required_models: bool
    allow_route_explain: bool
    block_http10: bool
    require_api_keys: bool


class ApiKeyRecord(Protocol):
    identifier: str
    key_sha256: str
    frontends: Sequence[str]
    allow_model_management: bool
    rate_limit_requests_per_second: float
    active: bool


class BackendRecord(Protocol):
    identifier: str
    name: str | None
    hostname: str
    port: int
    ssl: bool
    api_format: str
    active: bool
    labels: Sequence[str]
    max_parallel_requests: int
    rate_limit_requests_threshold: int
    allow_embeddings: bool
    allow_completions: bool
    pinned_embeddings_properties: Mapping[str, Any]
    pinned_completions_properties: Mapping[str, Any]
    bearer_token: str | None
    querystring: str | None
    headers: Mapping[str, str]


def backend_base_url(hostname: str, port: int, ssl: bool) -> str:
    """OllamaFlow's UrlPrefix: ``scheme://host:port`` (IPv6 literals in brackets), no trailing slash."""
    host = f"[{hostname}]" if ":" in hostname and not hostname.startswith("[") else hostname
    return f"{'https' if ssl else 'http'}://{host}:{port}"


def frontend_view(row: FrontendRecord) -> FrontendView:
    return FrontendView(
        id=row.identifier,
        name=row.name or "",
        hostname=row.hostname,
        load_balancing=row.load_balancing,  # type: ignore[arg-type]  # validated on write
        backends=tuple(row.backends),
        required_models=tuple(row.required_models),
        timeout_ms=row.timeout_ms,
        max_request_body_size=row.max_request_body_size,
        use_sticky_sessions=row.use_sticky_sessions,
        sticky_session_expiration_ms=row.sticky_session_expiration_ms,
        pinned_embeddings_properties=dict(row.pinned_embeddings_properties),
        pinned_completions_properties=dict(row.pinned_completions_properties),
        allow_embeddings=row.allow_embeddings,
        allow_completions=row.allow_completions,
        allow_retries=row.allow_retries,
        active=row.active,
        sticky_headers=tuple(row.sticky_headers),
        queue_size=row.queue_size,
        queue_timeout_ms=row.queue_timeout_ms,
        allow_model_management=row.allow_model_management,
        model_management_requires_key=row.model_management_requires_key,
        pull_adds_required_models=row.pull_adds_required_models,
        allow_route_explain=row.allow_route_explain,
        block_http10=row.block_http10,
        require_api_keys=row.require_api_keys,
    )


def api_key_view(row: ApiKeyRecord) -> ApiKeyView:
    return ApiKeyView(
        id=row.identifier,
        digest=row.key_sha256,
        frontends=tuple(row.frontends),
        allow_model_management=row.allow_model_management,
        rate_limit_requests_per_second=row.rate_limit_requests_per_second,
    )


# Seals one backend's secrets for the snapshot: (backend id, secrets) -> sealed text
# (``shared.secret_box.seal_secrets`` with a key; deterministic, so a kept view keeps its text).
Seal = Callable[[str, BackendSecrets], str]


def backend_view(
    row: BackendRecord, runtime: BackendRuntime = UNPROBED, seal: Seal | None = None
) -> BackendView:
    return BackendView(
        id=row.identifier,
        name=row.name or "",
        base_url=backend_base_url(row.hostname, row.port, row.ssl),
        api_format=row.api_format,  # type: ignore[arg-type]  # validated on write
        active=row.active,
        healthy=runtime.healthy,
        health_checked=runtime.checked,
        models=tuple(sorted(runtime.models)),
        models_known=runtime.models_known,
        models_loaded=tuple(sorted(runtime.models_loaded, key=lambda m: m.name)),
        # Only an OpenAI-format backend has a dialect: an Ollama backend gets Ollama's own API.
        dialect=runtime.dialect if row.api_format == "OpenAI" else "",
        labels=tuple(row.labels),
        max_parallel_requests=row.max_parallel_requests,
        rate_limit_requests_threshold=row.rate_limit_requests_threshold,
        allow_embeddings=row.allow_embeddings,
        allow_completions=row.allow_completions,
        pinned_embeddings_properties=dict(row.pinned_embeddings_properties),
        pinned_completions_properties=dict(row.pinned_completions_properties),
        **_sealed(row, seal),
    )


def backend_secrets(row: BackendRecord) -> BackendSecrets:
    """The secret fields of ``row`` (empty ones as None / {})."""
    return BackendSecrets(
        bearer_token=row.bearer_token or None, querystring=row.querystring or None, headers=dict(row.headers)
    )


def _sealed(row: BackendRecord, seal: Seal | None) -> dict[str, Any]:
    """The snapshot fields that carry ``row``'s secrets: sealed, never in clear; withheld (and so
    flagged) when there is nothing to seal them with (no secrets key)."""
    secrets = backend_secrets(row)
    if not secrets:
        return {}
    if seal is None:
        return {"secrets_withheld": True}
    return {"sealed_secrets": seal(row.identifier, secrets)}


class ViewMemo:
    """The views built for the last rows seen, so that a row object met again (the row cache hands
    back the same object while the row is unchanged) with the same runtime state is not rebuilt."""

    def __init__(self, seal: Seal | None = None) -> None:
        self.seal = seal  # seals each backend's secrets; None withholds them
        self._backends: dict[str, tuple[BackendRecord, BackendRuntime, BackendView, Limits]] = {}
        self._frontends: dict[str, tuple[FrontendRecord, FrontendView]] = {}
        self.shares = ShareMemo()

    def backend(self, row: BackendRecord, runtime: BackendRuntime, ident: str | None = None) -> BackendView:
        """The view of ``row`` (whose identifier the caller may pass: an ORM attribute costs a
        microsecond a read, and a publish reads a thousand)."""
        ident = row.identifier if ident is None else ident
        cached = self._backends.get(ident)
        if cached is not None and cached[0] is row and (cached[1] is runtime or cached[1] == runtime):
            return cached[2]
        view = backend_view(row, runtime, self.seal)
        limits = Limits(view.max_parallel_requests, float(view.rate_limit_requests_threshold))
        self._backends[ident] = (row, runtime, view, limits)
        return view

    def limits(self, ident: str) -> Limits:
        """The limits of the backend whose view ``backend`` made last: the same object while they are
        unchanged, so that comparing a split's inputs with the last one's is mostly identity checks."""
        return self._backends[ident][3]

    def frontend(self, row: FrontendRecord) -> FrontendView:
        cached = self._frontends.get(row.identifier)
        if cached is not None and cached[0] is row:
            return cached[1]
        view = frontend_view(row)
        self._frontends[row.identifier] = (row, view)
        return view

    def forget_others(self, backends: Iterable[str], frontends: Iterable[str]) -> None:
        """Drop the views of rows that no longer exist."""
        for memo, keep in ((self._backends, set(backends)), (self._frontends, set(frontends))):
            for gone in memo.keys() - keep:
                del memo[gone]


def build_content(
    frontends: Iterable[FrontendRecord],
    backends: Iterable[BackendRecord],
    dataplanes: Iterable[str] = (),
    runtime: Callable[[str], BackendRuntime] | None = None,
    *,
    demand: Mapping[str, Mapping[str, int]] | None = None,
    previous_shares: Mapping[str, Mapping[str, BackendShare]] | None = None,
    api_keys: Iterable[ApiKeyRecord] = (),
    key_demand: Mapping[str, Mapping[str, int]] | None = None,
    previous_key_rates: Mapping[str, Mapping[str, float]] | None = None,
    admin_token_digests: Iterable[str] = (),
    draining: Iterable[str] = (),
    memo: ViewMemo | None = None,
    seal: Seal | None = None,
) -> SnapshotContent:
    """The snapshot content for these rows, live data-plane ids and the backends' runtime state
    (order is canonicalised by seal).

    ``demand``: live data plane id -> backend id -> in-flight + queued requests (absent: idle).
    ``previous_shares``: the shares of the stored snapshot, kept while still close (hysteresis).
    ``key_demand``: live data plane id -> API key id -> its requests per second there;
    ``previous_key_rates``: the key rates of the stored snapshot (hysteresis likewise).
    ``draining``: live data planes that are stopping; their shares go to the others.
    ``memo``: views kept from the previous build, for rows and runtime states met again (its ``seal``
    seals the secrets).
    ``seal``: without a memo, seals each backend's secrets; None withholds them
    (``BackendView.secrets_withheld``).
    """
    state = runtime or (lambda _id: UNPROBED)
    backend_rows = list(backends)
    backend_ids = [b.identifier for b in backend_rows]  # read once: ORM attributes are slow to read
    frontend_rows = list(frontends)
    if memo is None:
        memo = ViewMemo(seal)
    else:
        memo.forget_others(backend_ids, (f.identifier for f in frontend_rows))
    keys = [k for k in api_keys if k.active]
    live = set(dataplanes)
    leaving = frozenset(draining) & live
    load = demand or {}
    backend_views = tuple(
        memo.backend(b, state(i), i) for b, i in zip(backend_rows, backend_ids, strict=True)
    )
    shares = split_shares(
        {i: memo.limits(i) for i in backend_ids},
        {d: load.get(d, {}) for d in live},
        previous_shares,
        leaving,
        memo.shares,
    )
    key_load = key_demand or {}
    rates = split_key_rates(
        {k.identifier: k.rate_limit_requests_per_second for k in keys},
        {d: key_load.get(d, {}) for d in live},
        previous_key_rates,
        leaving,
    )
    planes = tuple(DataPlaneView(id=d, shares=shares[d], key_rates=rates[d]) for d in sorted(shares))
    return SnapshotContent(
        frontends=tuple(memo.frontend(f) for f in frontend_rows),
        backends=backend_views,
        cluster=ClusterView(dataplanes=planes, admin_token_digests=tuple(sorted(admin_token_digests))),
        api_keys=tuple(api_key_view(k) for k in keys),
    )


def shares_of(content: SnapshotContent) -> dict[str, dict[str, BackendShare]]:
    """Data plane id -> its shares, as published in ``content``."""
    return {d.id: dict(d.shares) for d in content.cluster.dataplanes}


def key_rates_of(content: SnapshotContent) -> dict[str, dict[str, float]]:
    """Data plane id -> its parts of the API keys' rates, as published in ``content``."""
    return {d.id: dict(d.key_rates) for d in content.cluster.dataplanes}
