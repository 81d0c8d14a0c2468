"""The tables (the only SQLModel here): OllamaFlow's Frontend and Backend, one row per object, and the
client API keys with their usage counters.

Column names are the snake_case of OllamaFlow's JSON properties; lists and objects are JSONB. Runtime
state (health, uptime, models, active requests) is not configuration and has no column. A frontend's backend
ids live in a JSONB array, as in OllamaFlow; the admin service keeps them pointing at real backends.

``snapshot_revision`` numbers the published snapshots. It lives in Postgres so that revisions keep
rising even when NATS loses its store.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from controlplane.sealed_columns import SealedJson, SealedText
from shared.snapshot import DEFAULT_STICKY_HEADERS

__all__ = [
    "FRONTEND_HOSTNAME_INDEX",
    "REVISION_SEQUENCE",
    "ApiKeyRow",
    "ApiKeyUsageRow",
    "BackendRow",
    "FrontendRow",
    "metadata",
]

metadata = SQLModel.metadata

REVISION_SEQUENCE = sa.Sequence("snapshot_revision", start=1, metadata=metadata)

_TIMESTAMP = sa.DateTime(timezone=True)


def _json(default: Any) -> Any:
    """A NOT NULL JSONB column whose Python default is a fresh copy of ``default``."""
    return Field(default_factory=lambda: type(default)(default), sa_type=JSONB, nullable=False)


# Hostnames are unique among frontends, ignoring case. Frontends that shared one before this index
# existed are left out of it by name (see its migration); the admin service refuses new duplicates.
FRONTEND_HOSTNAME_INDEX = "frontends_hostname_unique"


class FrontendRow(SQLModel, table=True):
    """A virtual endpoint: matched by Host header, served by a pool of backends."""

    __tablename__ = "frontends"
    __table_args__ = (sa.Index(FRONTEND_HOSTNAME_INDEX, sa.func.lower(sa.column("hostname")), unique=True),)

    identifier: str = Field(primary_key=True, max_length=128)
    name: str | None = Field(default=None)
    hostname: str = Field(default="*", index=True)
    timeout_ms: int = Field(default=60000, sa_type=sa.BigInteger)
    # ModelAware for new frontends; rows from before it existed keep what they had.
    load_balancing: str = Field(default="ModelAware", max_length=32)
    block_http10: bool = True
    max_request_body_size: int = Field(default=536870912, sa_type=sa.BigInteger)
    backends: list[str] = _json([])
    required_models: list[str] = _json([])
    log_request_full: bool = False
    log_request_body: bool = False
    log_response_body: bool = False
    use_sticky_sessions: bool = False
    sticky_session_expiration_ms: int = 1800000
    # Lower-case request header names whose first present value keys a sticky session.
    sticky_headers: list[str] = _json(list(DEFAULT_STICKY_HEADERS))
    # Per data plane: requests that may wait when every backend is full (0: none), and for how long.
    queue_size: int = 128
    queue_timeout_ms: int = 30000
    pinned_embeddings_properties: dict[str, Any] = _json({})
    pinned_completions_properties: dict[str, Any] = _json({})
    allow_embeddings: bool = True
    allow_completions: bool = True
    allow_retries: bool = True
    active: bool = True
    # Access, beyond OllamaFlow; all off by default.
    allow_model_management: bool = False
    model_management_requires_key: bool = False
    pull_adds_required_models: bool = False
    allow_route_explain: bool = False
    require_api_keys: bool = False
    created_utc: datetime = Field(sa_type=_TIMESTAMP, nullable=False)
    last_update_utc: datetime = Field(sa_type=_TIMESTAMP, nullable=False)


class BackendRow(SQLModel, table=True):
    """One Ollama or OpenAI-compatible inference server."""

    __tablename__ = "backends"

    identifier: str = Field(primary_key=True, max_length=128)
    name: str | None = Field(default=None)
    hostname: str = "localhost"
    port: int = 8000
    ssl: bool = False
    unhealthy_threshold: int = 2
    healthy_threshold: int = 2
    health_check_method: str = Field(default="GET", max_length=16)
    health_check_url: str = "/"
    # None: the control plane's OLLAMAFLOW_HEALTH_INTERVAL / OLLAMAFLOW_HEALTH_TIMEOUT.
    health_check_interval_ms: int | None = None
    health_check_timeout_ms: int | None = None
    max_parallel_requests: int = 0  # 0: unlimited; rows stored earlier keep their values
    rate_limit_requests_threshold: int = 0
    log_request_full: bool = False
    log_request_body: bool = False
    log_response_body: bool = False
    api_format: str = Field(default="Ollama", max_length=32)
    labels: list[str] = _json([])
    pinned_embeddings_properties: dict[str, Any] = _json({})
    pinned_completions_properties: dict[str, Any] = _json({})
    allow_embeddings: bool = True
    allow_completions: bool = True
    # Write-only through the API: never returned, never logged, stored sealed (sealed_columns).
    bearer_token: str | None = Field(default=None, repr=False, sa_type=SealedText("bearer_token"))
    querystring: str | None = Field(default=None, repr=False, sa_type=SealedText("querystring"))
    headers: dict[str, str] = Field(
        default_factory=dict, repr=False, sa_type=SealedJson("headers"), nullable=False
    )
    active: bool = True
    created_utc: datetime = Field(sa_type=_TIMESTAMP, nullable=False)
    last_update_utc: datetime = Field(sa_type=_TIMESTAMP, nullable=False)


class ApiKeyRow(SQLModel, table=True):
    """A client API key: only its SHA-256 is stored (keys are 256-bit random, so a fast hash is right).

    The usage counters here are what was folded in from ``apikey_usage`` rows of data-plane runs that
    ended; the admin API shows them plus the live rows.
    """

    __tablename__ = "apikeys"

    identifier: str = Field(primary_key=True, max_length=128)
    name: str | None = Field(default=None)
    key_sha256: str = Field(max_length=64, unique=True, repr=False)
    key_prefix: str = Field(max_length=16)  # the key's first characters, to tell keys apart
    frontends: list[str] = _json([])
    allow_model_management: bool = False
    rate_limit_requests_per_second: float = 0.0  # cluster-wide; 0: unlimited
    active: bool = True
    requests_total: int = Field(default=0, sa_type=sa.BigInteger)
    rate_limited_total: int = Field(default=0, sa_type=sa.BigInteger)
    last_used_utc: datetime | None = Field(default=None, sa_type=_TIMESTAMP, nullable=True)
    created_utc: datetime = Field(sa_type=_TIMESTAMP, nullable=False)
    last_update_utc: datetime = Field(sa_type=_TIMESTAMP, nullable=False)


class ApiKeyUsageRow(SQLModel, table=True):
    """One key's counters as one data-plane run (``source``: data plane id and start id) reported them.

    Counters only grow within a run and every replica writes the larger value, so reports heard twice,
    by two replicas or after a restart of either plane, are never counted twice.
    """

    __tablename__ = "apikey_usage"

    key_identifier: str = Field(
        sa_column=sa.Column(
            sa.String(128), sa.ForeignKey("apikeys.identifier", ondelete="CASCADE"), primary_key=True
        )
    )
    source: str = Field(primary_key=True, max_length=300)
    requests_total: int = Field(default=0, sa_type=sa.BigInteger)
    rate_limited_total: int = Field(default=0, sa_type=sa.BigInteger)
    last_used_utc: datetime | None = Field(default=None, sa_type=_TIMESTAMP, nullable=True)
    updated_utc: datetime = Field(sa_type=_TIMESTAMP, nullable=False)
