"""The migration that adds the frontends' sticky headers and queue settings (4953929389c8), on a real
database holding a frontend from before it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic import command
from sqlalchemy import create_engine, pool, text

from controlplane.migrate import alembic_config, current_revision, upgrade
from tests.controlplane.harness import fresh_database

BEFORE = "7c3e9b2a5d10"
THIS = "4953929389c8"


@pytest.fixture
def empty_database(database_url: str) -> Iterator[str]:
    with fresh_database(database_url) as url:
        yield url


def _run(url: str, sql: str) -> list[tuple[object, ...]]:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(sql))
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        engine.dispose()


def _downgrade(url: str, revision: str) -> None:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.begin() as conn:
            config = alembic_config()
            config.attributes["connection"] = conn
            command.downgrade(config, revision)
    finally:
        engine.dispose()


def test_existing_frontends_get_the_defaults_and_keep_their_strategy(empty_database: str) -> None:
    upgrade(empty_database, BEFORE)
    _run(empty_database, "INSERT INTO frontends (identifier, load_balancing) VALUES ('old', 'Random')")
    _run(empty_database, "INSERT INTO frontends (identifier) VALUES ('plain')")

    upgrade(empty_database, THIS)
    assert current_revision(empty_database) == THIS
    rows = _run(
        empty_database,
        "SELECT identifier, load_balancing, sticky_headers, queue_size, queue_timeout_ms "
        "FROM frontends ORDER BY identifier",
    )
    assert rows == [
        ("old", "Random", ["x-conversation-id", "x-thread-id"], 128, 30000),
        ("plain", "RoundRobin", ["x-conversation-id", "x-thread-id"], 128, 30000),
    ]
    # A row inserted without a strategy from now on gets the new default.
    _run(empty_database, "INSERT INTO frontends (identifier) VALUES ('new')")
    assert _run(empty_database, "SELECT load_balancing FROM frontends WHERE identifier = 'new'") == [
        ("ModelAware",)
    ]


def test_downgrade_maps_unknown_strategies_to_round_robin(empty_database: str) -> None:
    upgrade(empty_database, THIS)
    _run(
        empty_database,
        "INSERT INTO frontends (identifier, load_balancing, queue_size) VALUES "
        "('a', 'ModelAware', 5), ('b', 'LeastConnections', 0), ('c', 'Random', 1)",
    )
    _downgrade(empty_database, BEFORE)
    assert current_revision(empty_database) == BEFORE
    assert _run(empty_database, "SELECT identifier, load_balancing FROM frontends ORDER BY identifier") == [
        ("a", "RoundRobin"),
        ("b", "RoundRobin"),
        ("c", "Random"),
    ]
    columns = _run(
        empty_database,
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'frontends' "
        "AND column_name IN ('sticky_headers', 'queue_size', 'queue_timeout_ms')",
    )
    assert columns == []
    upgrade(empty_database)  # and up again
    assert _run(empty_database, "SELECT queue_size FROM frontends WHERE identifier = 'a'") == [(128,)]
