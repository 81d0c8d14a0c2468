"""Frontends: Hostname unique among frontends, ignoring case ("*" included).

Two frontends with the same Hostname could be stored before, and the data planes silently routed
to one of them. A database that holds such frontends still upgrades: in each group sharing a
Hostname, the frontend the data planes route to (the first active one by Identifier, else the first)
is indexed, and the others are named in the index's predicate, left out of it, and listed in a
warning. They keep working as before (unrouted); the admin API refuses any new duplicate, and lets
those frontends change as long as their Hostname stays as it is or becomes unique.

Revision ID: 5d2f8c41a7e3
Revises: b8e41d07c2a9
Create Date: 2026-12-03
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5d2f8c41a7e3"
down_revision: str | Sequence[str] | None = "b8e41d07c2a9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "frontends_hostname_unique"

# Within each Hostname, routing's order: active first, then by Identifier in code-point order.
_SHADOWED = """
SELECT identifier, hostname FROM (
    SELECT identifier, hostname, row_number() OVER (
        PARTITION BY lower(hostname) ORDER BY NOT active, identifier COLLATE "C"
    ) AS place
    FROM frontends
) ranked
WHERE place > 1
ORDER BY lower(hostname), identifier COLLATE "C"
"""


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def upgrade() -> None:
    shadowed = op.get_bind().execute(sa.text(_SHADOWED)).all()
    where = None
    if shadowed:
        names = ", ".join(f"'{identifier}' ({hostname!r})" for identifier, hostname in shadowed)
        logging.getLogger("alembic.runtime.migration").warning(
            "frontends sharing a Hostname with another (which the data planes route to instead): %s. "
            "They are left out of the unique index %s; give them a Hostname of their own or delete them.",
            names,
            INDEX,
        )
        where = sa.text(f"identifier NOT IN ({', '.join(_quoted(i) for i, _ in shadowed)})")
    op.create_index(INDEX, "frontends", [sa.text("lower(hostname)")], unique=True, postgresql_where=where)


def downgrade() -> None:
    op.drop_index(INDEX, table_name="frontends")
