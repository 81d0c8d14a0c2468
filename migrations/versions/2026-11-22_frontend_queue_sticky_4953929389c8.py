"""Frontends: sticky-session headers, queue size and wait; ModelAware becomes the default strategy.

Existing frontends keep their LoadBalancing; only new ones default to ModelAware. Downgrading turns the
strategies the older schema does not know (LeastConnections, ModelAware) back into RoundRobin.

Revision ID: 4953929389c8
Revises: 7c3e9b2a5d10
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "4953929389c8"
down_revision: str | Sequence[str] | None = "7c3e9b2a5d10"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "frontends",
        sa.Column(
            "sticky_headers",
            JSONB(),
            nullable=False,
            server_default=sa.text("""'["x-conversation-id", "x-thread-id"]'::jsonb"""),
        ),
    )
    op.add_column("frontends", sa.Column("queue_size", sa.Integer(), nullable=False, server_default="128"))
    op.add_column(
        "frontends", sa.Column("queue_timeout_ms", sa.Integer(), nullable=False, server_default="30000")
    )
    op.alter_column("frontends", "load_balancing", server_default="ModelAware")


def downgrade() -> None:
    op.execute(
        "UPDATE frontends SET load_balancing = 'RoundRobin' "
        "WHERE load_balancing NOT IN ('RoundRobin', 'Random')"
    )
    op.alter_column("frontends", "load_balancing", server_default="RoundRobin")
    op.drop_column("frontends", "queue_timeout_ms")
    op.drop_column("frontends", "queue_size")
    op.drop_column("frontends", "sticky_headers")
