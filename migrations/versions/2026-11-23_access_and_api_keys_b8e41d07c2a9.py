"""Access control: frontends' model-management, explain and API-key settings; the API key tables.

Every new frontend setting is off, existing frontends included: model management through a frontend,
which OllamaFlow leaves open to anyone who reaches it, now needs ``AllowModelManagement``. Keys are
stored as their SHA-256 only; ``apikey_usage`` holds each data-plane run's counters per key.

Revision ID: b8e41d07c2a9
Revises: 4953929389c8
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "b8e41d07c2a9"
down_revision: str | Sequence[str] | None = "4953929389c8"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FRONTEND_FLAGS = (
    "allow_model_management",
    "model_management_requires_key",
    "pull_adds_required_models",
    "allow_route_explain",
    "require_api_keys",
)


def _timestamp(name: str, *, nullable: bool = False) -> sa.Column:
    default = None if nullable else sa.func.now()
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable, server_default=default)


def upgrade() -> None:
    for name in FRONTEND_FLAGS:  # the server default also sets every existing row
        op.add_column("frontends", sa.Column(name, sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        "apikeys",
        sa.Column("identifier", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(), nullable=True),
        sa.Column("key_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("key_prefix", sa.String(16), nullable=False),
        sa.Column("frontends", JSONB(), nullable=False, server_default=sa.text("'[]'::jsonb")),
        sa.Column("allow_model_management", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("rate_limit_requests_per_second", sa.Float(), nullable=False, server_default="0"),
        sa.Column("active", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("requests_total", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("rate_limited_total", sa.BigInteger(), nullable=False, server_default="0"),
        _timestamp("last_used_utc", nullable=True),
        _timestamp("created_utc"),
        _timestamp("last_update_utc"),
    )
    op.create_table(
        "apikey_usage",
        sa.Column(
            "key_identifier",
            sa.String(128),
            sa.ForeignKey("apikeys.identifier", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("source", sa.String(300), primary_key=True),
        sa.Column("requests_total", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("rate_limited_total", sa.BigInteger(), nullable=False, server_default="0"),
        _timestamp("last_used_utc", nullable=True),
        _timestamp("updated_utc"),
    )


def downgrade() -> None:
    op.drop_table("apikey_usage")
    op.drop_table("apikeys")
    for name in reversed(FRONTEND_FLAGS):
        op.drop_column("frontends", name)
