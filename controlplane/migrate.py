"""Apply the Alembic migrations in the ``migrations`` package, configured in code (no alembic.ini).

Synchronous on purpose: ``ollamaflow migrate`` calls it directly and the running control plane calls
it in a worker thread. Concurrency between replicas is handled in ``migrations/env.py`` (advisory lock).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, pool

import migrations

__all__ = ["alembic_config", "current_revision", "head_revision", "upgrade"]

SCRIPT_LOCATION = Path(migrations.__file__).resolve().parent


def alembic_config(database_url: str | None = None) -> Config:
    """An Alembic config for this project's migrations, optionally bound to a database URL."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.set_main_option("path_separator", "os")
    # Same naming as litestar-fullstack: date first, then the slug and the revision id.
    config.set_main_option("file_template", "%%(year)d-%%(month).2d-%%(day).2d_%%(slug)s_%%(rev)s")
    if database_url:
        # ConfigParser interpolates '%': escape it (percent-encoded passwords).
        config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the database at ``database_url`` (a ``postgresql+psycopg://`` URL) up to ``revision``.

    One call at a time per process: Alembic keeps its migration context in module globals. Separate
    processes may run it at once (the advisory lock in ``migrations/env.py`` orders them).
    """
    engine = create_engine(database_url, poolclass=pool.NullPool, hide_parameters=True)
    try:
        with engine.connect() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
            connection.commit()
    finally:
        engine.dispose()


def head_revision() -> str | None:
    """The newest revision shipped in this build."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(database_url: str) -> str | None:
    """The revision the database is at (None for an empty database)."""
    engine = create_engine(database_url, poolclass=pool.NullPool, hide_parameters=True)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
