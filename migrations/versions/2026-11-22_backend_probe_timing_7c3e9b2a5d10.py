"""Per-backend health probe interval and timeout (NULL: the control plane's settings).

Revision ID: 7c3e9b2a5d10
Revises: 61d49a524439
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "7c3e9b2a5d10"
down_revision: str | Sequence[str] | None = "61d49a524439"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("backends", sa.Column("health_check_interval_ms", sa.Integer(), nullable=True))
    op.add_column("backends", sa.Column("health_check_timeout_ms", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("backends", "health_check_timeout_ms")
    op.drop_column("backends", "health_check_interval_ms")
