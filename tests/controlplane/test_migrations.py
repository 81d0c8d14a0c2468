"""Alembic migrations on a real, empty PostgreSQL database: apply, re-apply, race, match the tables."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, pool, text

from controlplane.migrate import alembic_config, current_revision, head_revision, upgrade
from controlplane.tables import metadata
from tests.controlplane.harness import fresh_database


@pytest.fixture
def empty_database(database_url: str) -> Iterator[str]:
    with fresh_database(database_url) as url:
        yield url


def _tables(url: str) -> set[str]:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            return set(inspect(conn).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_an_empty_database_then_again(empty_database: str) -> None:
    assert current_revision(empty_database) is None
    upgrade(empty_database)
    assert current_revision(empty_database) == head_revision()
    assert {"frontends", "backends", "alembic_version"} <= _tables(empty_database)
    upgrade(empty_database)  # idempotent
    assert current_revision(empty_database) == head_revision()


def test_the_migrations_build_exactly_the_tables_the_code_uses(empty_database: str) -> None:
    upgrade(empty_database)
    engine = create_engine(empty_database, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, metadata) == []
            # The revision sequence is there and counts up.
            first = conn.execute(text("SELECT nextval('snapshot_revision')")).scalar_one()
            assert conn.execute(text("SELECT nextval('snapshot_revision')")).scalar_one() == first + 1
    finally:
        engine.dispose()


_MIGRATE_AT = """
import sys, time
from controlplane.migrate import upgrade
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
upgrade(sys.argv[1])
"""


@pytest.mark.slow
def test_replicas_migrating_at_the_same_moment_do_not_collide(empty_database: str) -> None:
    """Four processes (Alembic keeps its context per process) migrate an empty database at once.

    Without the advisory lock this fails more often than not with a duplicate pg_type key.
    """
    at = str(time.time() + 3.0)  # after every process has imported everything
    replicas = [
        subprocess.Popen(
            [sys.executable, "-c", _MIGRATE_AT, empty_database, at], stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    failures = [r.communicate(timeout=60)[1] for r in replicas if r.wait(timeout=60) != 0]
    assert failures == []
    assert current_revision(empty_database) == head_revision()


def test_downgrade_to_base_and_back(empty_database: str) -> None:
    upgrade(empty_database)
    engine = create_engine(empty_database, poolclass=pool.NullPool)
    try:
        with engine.begin() as conn:
            config = alembic_config()
            config.attributes["connection"] = conn
            command.downgrade(config, "base")
    finally:
        engine.dispose()
    assert _tables(empty_database) <= {"alembic_version"}
    upgrade(empty_database)
    assert current_revision(empty_database) == head_revision()


def test_the_migrate_command(empty_database: str) -> None:
    libpq_url = empty_database.replace("postgresql+psycopg://", "postgresql://")
    done = subprocess.run(
        [sys.executable, "-m", "ollamaflow.cli", "migrate", "--database-url", libpq_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert head_revision() in done.stdout
    assert current_revision(empty_database) == head_revision()


def test_the_migrate_command_without_a_url_exits_2() -> None:
    env = {"PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "ollamaflow.cli", "migrate"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "ollamaflow migrate: OLLAMAFLOW_DATABASE_URL is required (or --database-url)"
    ]
