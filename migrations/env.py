"""Alembic environment: migrate on the connection ``controlplane.migrate`` hands over, or on a URL.

The whole upgrade runs in one transaction that first takes a Postgres advisory lock, so control-plane
replicas starting together migrate one after the other: the first does the work, the rest then find
the schema at head and do nothing.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine, pool, text

from controlplane.tables import metadata

# Any fixed 64-bit number unique to this application's advisory locks ("OLLAFLOW" in ASCII).
MIGRATION_LOCK_KEY = 0x4F4C4C41464C4F57


def _migrate(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, compare_type=True)
    with context.begin_transaction():
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        context.run_migrations()


def _run() -> None:
    config = context.config
    if context.is_offline_mode():
        # `--sql` mode: emit the DDL without a database.
        context.configure(
            url=config.get_main_option("sqlalchemy.url"), target_metadata=metadata, literal_binds=True
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "", poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            _migrate(connection)
    finally:
        engine.dispose()


_run()
