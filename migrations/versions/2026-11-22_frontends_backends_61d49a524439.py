"""Frontends, backends and the snapshot revision sequence.

Revision ID: 61d49a524439
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "61d49a524439"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _flag(name: str, default: bool) -> sa.Column:
    return sa.Column(name, sa.Boolean(), nullable=False, server_default=sa.true() if default else sa.false())


def _json(name: str, empty: str) -> sa.Column:
    return sa.Column(name, JSONB(), nullable=False, server_default=sa.text(f"'{empty}'::jsonb"))


def _timestamps() -> list[sa.Column]:
    return [
        sa.Column("created_utc", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column(
            "last_update_utc", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    ]


def upgrade() -> None:
    op.create_table(
        "backends",
        sa.Column("identifier", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(), nullable=True),
        sa.Column("hostname", sa.String(), nullable=False, server_default="localhost"),
        sa.Column("port", sa.Integer(), nullable=False, server_default="8000"),
        _flag("ssl", False),
        sa.Column("unhealthy_threshold", sa.Integer(), nullable=False, server_default="2"),
        sa.Column("healthy_threshold", sa.Integer(), nullable=False, server_default="2"),
        sa.Column("health_check_method", sa.String(16), nullable=False, server_default="GET"),
        sa.Column("health_check_url", sa.String(), nullable=False, server_default="/"),
        sa.Column("max_parallel_requests", sa.Integer(), nullable=False, server_default="4"),
        sa.Column("rate_limit_requests_threshold", sa.Integer(), nullable=False, server_default="10"),
        _flag("log_request_full", False),
        _flag("log_request_body", False),
        _flag("log_response_body", False),
        sa.Column("api_format", sa.String(32), nullable=False, server_default="Ollama"),
        _json("labels", "[]"),
        _json("pinned_embeddings_properties", "{}"),
        _json("pinned_completions_properties", "{}"),
        _flag("allow_embeddings", True),
        _flag("allow_completions", True),
        sa.Column("bearer_token", sa.String(), nullable=True),
        sa.Column("querystring", sa.String(), nullable=True),
        _json("headers", "{}"),
        _flag("active", True),
        *_timestamps(),
    )
    op.create_table(
        "frontends",
        sa.Column("identifier", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(), nullable=True),
        sa.Column("hostname", sa.String(), nullable=False, server_default="*"),
        sa.Column("timeout_ms", sa.BigInteger(), nullable=False, server_default="60000"),
        sa.Column("load_balancing", sa.String(32), nullable=False, server_default="RoundRobin"),
        _flag("block_http10", True),
        sa.Column("max_request_body_size", sa.BigInteger(), nullable=False, server_default="536870912"),
        _json("backends", "[]"),
        _json("required_models", "[]"),
        _flag("log_request_full", False),
        _flag("log_request_body", False),
        _flag("log_response_body", False),
        _flag("use_sticky_sessions", False),
        sa.Column("sticky_session_expiration_ms", sa.Integer(), nullable=False, server_default="1800000"),
        _json("pinned_embeddings_properties", "{}"),
        _json("pinned_completions_properties", "{}"),
        _flag("allow_embeddings", True),
        _flag("allow_completions", True),
        _flag("allow_retries", True),
        _flag("active", True),
        *_timestamps(),
    )
    op.create_index("ix_frontends_hostname", "frontends", ["hostname"])
    op.execute(sa.schema.CreateSequence(sa.Sequence("snapshot_revision", start=1)))


def downgrade() -> None:
    op.execute(sa.schema.DropSequence(sa.Sequence("snapshot_revision")))
    op.drop_index("ix_frontends_hostname", table_name="frontends")
    op.drop_table("frontends")
    op.drop_table("backends")
