"""The versioned snapshot: the one document the control plane publishes and data planes route by.

Schema evolution rule: within a major version only add fields with defaults; never change a type or
reuse a name. The major is also in the bus key (``snapshot.v1``). The control plane's signature
(``signature``, made and checked by ``shared.signing``) covers the header; the content hash covers
the content.

Pure: no I/O and no clock reads; callers pass ``generated_at``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import msgspec

from shared.errors import SnapshotOutdated, SnapshotRejected

if TYPE_CHECKING:
    from shared.signing import SnapshotTrust

__all__ = [
    "DEFAULT_STICKY_HEADERS",
    "SCHEMA_MAJOR",
    "ApiFormat",
    "ApiKeyView",
    "BackendShare",
    "BackendView",
    "ClusterView",
    "DataPlaneView",
    "FrontendView",
    "LoadBalancing",
    "LoadedModel",
    "Snapshot",
    "SnapshotContent",
    "SnapshotSignature",
    "accept",
    "admit",
    "content_hash",
    "decode",
    "encode",
    "seal",
]

SCHEMA_MAJOR = 1

ApiFormat = Literal["Ollama", "OpenAI"]
# ModelAware prefers backends that have the model loaded, unless they are busier than a cold one.
LoadBalancing = Literal["RoundRobin", "Random", "LeastConnections", "ModelAware"]
DEFAULT_STICKY_HEADERS = ("x-conversation-id", "x-thread-id")


class LoadedModel(msgspec.Struct, frozen=True, kw_only=True):
    """A model a backend holds in memory (Ollama's /api/ps)."""

    name: str
    expires_at: str = ""  # RFC 3339 as the backend reported it; "" if it did not say
    size_vram: int = 0


class BackendView(msgspec.Struct, frozen=True, kw_only=True):
    """What a data plane needs to know about one backend."""

    id: str
    name: str = ""
    base_url: str  # scheme://host:port, no trailing slash
    api_format: ApiFormat = "Ollama"
    active: bool = True
    healthy: bool = True
    labels: tuple[str, ...] = ()
    max_parallel_requests: int = 4
    rate_limit_requests_threshold: int = 10
    allow_embeddings: bool = True
    allow_completions: bool = True
    pinned_embeddings_properties: dict[str, object] = {}
    pinned_completions_properties: dict[str, object] = {}
    # Credentials in clear: control planes leave these empty and publish ``sealed_secrets`` instead;
    # a data plane fills them in memory when it applies the snapshot (``shared.secret_box``).
    bearer_token: str | None = None
    querystring: str | None = None
    headers: dict[str, str] = {}
    # Runtime state from the control plane's probes. health_checked False: not probed yet (then
    # healthy is False for a new backend) or probing is switched off (then healthy is True).
    health_checked: bool = False
    models: tuple[str, ...] = ()  # names as the backend lists them (/api/tags or /v1/models), sorted
    models_known: bool = False  # False until the model list was read once
    models_loaded: tuple[LoadedModel, ...] = ()  # Ollama's /api/ps, sorted by name
    # The OpenAI-compatible server's kind as its model list shows it ("vllm"), or "" when plain or
    # unknown: a vLLM backend also takes the sampling options OpenAI lacks (top_k, min_p, ...).
    dialect: str = ""
    # The bearer token, query string and headers, sealed with the fleet's secrets key
    # (``shared.secret_box``: ``v1.<key id>.<ciphertext>``); "" when the backend has none.
    sealed_secrets: str = ""
    # True: the backend has secrets but the control plane had no secrets key to seal them, so they were
    # left out. A data plane must not send it requests (they would go without their credentials).
    secrets_withheld: bool = False


class FrontendView(msgspec.Struct, frozen=True, kw_only=True):
    """A virtual endpoint, matched by Host header, with its pool of backend ids."""

    id: str
    name: str = ""
    hostname: str = "*"
    load_balancing: LoadBalancing = "RoundRobin"
    backends: tuple[str, ...] = ()
    required_models: tuple[str, ...] = ()
    timeout_ms: int = 60000
    max_request_body_size: int = 536870912
    use_sticky_sessions: bool = False
    sticky_session_expiration_ms: int = 1800000
    pinned_embeddings_properties: dict[str, object] = {}
    pinned_completions_properties: dict[str, object] = {}
    allow_embeddings: bool = True
    allow_completions: bool = True
    allow_retries: bool = True
    active: bool = True
    # Request headers whose first present value keys a sticky session (lower-case).
    sticky_headers: tuple[str, ...] = DEFAULT_STICKY_HEADERS
    # Requests that may wait, per data plane, when every candidate backend is at its limit; 0 = none.
    queue_size: int = 128
    queue_timeout_ms: int = 30000  # the longest a request waits in that queue
    # Access (all off by default, unlike OllamaFlow, where anyone reaching a frontend manages models):
    # pull, delete, copy, create, push and blobs are refused unless allowed, and may need an API key
    # that allows them.
    allow_model_management: bool = False
    model_management_requires_key: bool = False
    pull_adds_required_models: bool = False  # the control plane decides; here for the record
    allow_route_explain: bool = False  # X-OllamaFlow-Explain honoured for anyone (else admin tokens only)
    block_http10: bool = True  # HTTP/1.0 requests get 505
    require_api_keys: bool = False  # inference and listing need an API key valid for this frontend


class ApiKeyView(msgspec.Struct, frozen=True, kw_only=True):
    """An active client API key: never the key itself, only its SHA-256 (hex)."""

    id: str
    digest: str
    frontends: tuple[str, ...] = ()  # frontend ids it is valid for
    allow_model_management: bool = False
    # Requests per second for the whole cluster (0: unlimited); each data plane enforces its share.
    rate_limit_requests_per_second: float = 0.0


class BackendShare(msgspec.Struct, frozen=True, kw_only=True):
    """One data plane's part of a backend's limits; the parts of all live data planes sum to at most
    the backend's MaxParallelRequests and RateLimitRequestsThreshold."""

    max_parallel: int
    rate_per_second: float


class DataPlaneView(msgspec.Struct, frozen=True, kw_only=True):
    """A data plane the control plane has heard from recently."""

    id: str
    # Backend id -> this data plane's share of that backend's limits. A backend missing here (or a
    # data plane missing from the snapshot) means: not assigned yet, see dataplane admission.
    shares: dict[str, BackendShare] = {}
    # API key id -> this data plane's part of the key's RateLimitRequestsPerSecond. A limited key
    # missing here means: not assigned yet, take an even split over the listed data planes.
    key_rates: dict[str, float] = {}


class ClusterView(msgspec.Struct, frozen=True, kw_only=True):
    """Facts about the cluster as a whole."""

    dataplanes: tuple[DataPlaneView, ...] = ()
    # SHA-256 (hex) of each admin token, sorted: a request carrying one may ask for route explanations.
    admin_token_digests: tuple[str, ...] = ()


class SnapshotContent(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the content hash covers: the routing-relevant state, in a canonical order."""

    frontends: tuple[FrontendView, ...] = ()
    backends: tuple[BackendView, ...] = ()
    cluster: ClusterView = ClusterView()
    api_keys: tuple[ApiKeyView, ...] = ()


class SnapshotSignature(msgspec.Struct, frozen=True, kw_only=True):
    """The control plane's ed25519 signature over the snapshot's header (``shared.signing``)."""

    key_id: str  # the first 16 hex digits of the SHA-256 of the raw public key
    value: str  # base64 of the 64-byte signature


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    """One immutable, versioned snapshot."""

    schema: int = SCHEMA_MAJOR
    revision: int
    content_hash: str
    generated_at: str  # RFC 3339, UTC
    content: SnapshotContent
    # None: unsigned (a data plane takes it only when configured to allow unsigned snapshots).
    signature: SnapshotSignature | None = None


class _Header(msgspec.Struct):
    """The part of any snapshot, of any major version, read before trusting the rest."""

    schema: int
    revision: int


_encoder = msgspec.json.Encoder(order="deterministic")
_decoder = msgspec.json.Decoder(Snapshot)
_content_decoder = msgspec.json.Decoder(SnapshotContent)
_header_decoder = msgspec.json.Decoder(_Header)


def canonical(content: SnapshotContent) -> SnapshotContent:
    """Sort every collection by id so that equal state always encodes to equal bytes."""
    cluster = content.cluster
    return SnapshotContent(
        frontends=tuple(sorted(content.frontends, key=lambda f: f.id)),
        backends=tuple(sorted(content.backends, key=lambda b: b.id)),
        cluster=msgspec.structs.replace(
            cluster,
            dataplanes=tuple(sorted(cluster.dataplanes, key=lambda d: d.id)),
            admin_token_digests=tuple(sorted(cluster.admin_token_digests)),
        ),
        api_keys=tuple(sorted(content.api_keys, key=lambda k: k.id)),
    )


def content_hash(content: SnapshotContent) -> str:
    """The sha256 of the canonical encoding of ``content``."""
    return hashlib.sha256(_encoder.encode(canonical(content))).hexdigest()


def seal(content: SnapshotContent, *, revision: int, generated_at: str) -> Snapshot:
    """Build a snapshot from its content: canonical order plus the hash that proves it.

    The content goes through one encode/decode first, so the hash covers exactly what a data plane
    will decode (e.g. an int given for a float field becomes the float every reader sees).
    """
    content = _content_decoder.decode(_encoder.encode(canonical(content)))
    return Snapshot(
        revision=revision,
        # Decoded from the canonical encoding, it is in canonical order already: no second sort.
        content_hash=hashlib.sha256(_encoder.encode(content)).hexdigest(),
        generated_at=generated_at,
        content=content,
    )


def encode(snapshot: Snapshot) -> bytes:
    return _encoder.encode(snapshot)


def decode(data: bytes) -> Snapshot:
    """Decode and verify a snapshot; raise SnapshotRejected for any flaw."""
    # One pass over the bytes when all is well (large snapshots take milliseconds to parse); only a
    # snapshot that does not decode is read again, for its header, to say why.
    try:
        snapshot = _decoder.decode(data)
    except msgspec.DecodeError as exc:
        try:
            header = _header_decoder.decode(data)
        except msgspec.DecodeError:
            raise SnapshotRejected(f"undecodable snapshot: {exc}") from exc
        if header.schema != SCHEMA_MAJOR:
            raise SnapshotRejected(
                f"unknown snapshot schema major {header.schema} (this build reads {SCHEMA_MAJOR})"
            ) from exc
        raise SnapshotRejected(f"invalid snapshot revision {header.revision}: {exc}") from exc
    if snapshot.schema != SCHEMA_MAJOR:
        raise SnapshotRejected(
            f"unknown snapshot schema major {snapshot.schema} (this build reads {SCHEMA_MAJOR})"
        )
    if content_hash(snapshot.content) != snapshot.content_hash:
        raise SnapshotRejected(f"snapshot revision {snapshot.revision} fails its content hash")
    return snapshot


def accept(
    current: Snapshot | None,
    data: bytes,
    *,
    trust: SnapshotTrust,
    decoder: Callable[[bytes], Snapshot] | None = None,
) -> Snapshot:
    """Decide whether a data plane takes ``data`` over ``current``.

    Returns the new snapshot, or raises SnapshotRejected (the caller keeps ``current``): undecodable,
    a bad content hash, not signed by a key ``trust`` holds, or older than ``current``
    (SnapshotOutdated).
    A same-revision copy is not an error: it returns ``current`` unchanged.
    ``decoder``: decodes as ``decode`` does (``shared.snapshot_codec.SnapshotDecoder.decode``).
    """
    return admit(current, (decoder or decode)(data), trust=trust)


def admit(current: Snapshot | None, snapshot: Snapshot, *, trust: SnapshotTrust) -> Snapshot:
    """``accept`` for a snapshot decoded and checked already (rebuilt from a delta, say): its signature
    and its revision against ``current``."""
    trust.verify(snapshot)
    if current is not None:
        if snapshot.revision < current.revision:
            raise SnapshotOutdated(
                f"snapshot revision {snapshot.revision} is older than the applied {current.revision}",
                snapshot.revision,
            )
        if snapshot.revision == current.revision:
            return current
    return snapshot
