"""The migration that adds the frontends' access settings and the API key tables (b8e41d07c2a9), on a
real database holding frontends from before it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from controlplane.migrate import current_revision, upgrade
from tests.controlplane.harness import fresh_database
from tests.controlplane.test_migration_routing_settings import _downgrade, _run

BEFORE = "4953929389c8"
THIS = "b8e41d07c2a9"
FLAGS = (
    "allow_model_management",
    "model_management_requires_key",
    "pull_adds_required_models",
    "allow_route_explain",
    "require_api_keys",
)


@pytest.fixture
def empty_database(database_url: str) -> Iterator[str]:
    with fresh_database(database_url) as url:
        yield url


def test_existing_frontends_get_every_access_setting_off(empty_database: str) -> None:
    upgrade(empty_database, BEFORE)
    _run(
        empty_database,
        "INSERT INTO frontends (identifier, block_http10) VALUES ('old', false), ('plain', true)",
    )

    upgrade(empty_database, THIS)
    assert current_revision(empty_database) == THIS
    rows = _run(
        empty_database,
        f"SELECT identifier, block_http10, {', '.join(FLAGS)} FROM frontends ORDER BY identifier",
    )
    assert rows == [("old", False, *[False] * 5), ("plain", True, *[False] * 5)]
    # Keys and their usage rows, the latter going with their key.
    _run(
        empty_database, "INSERT INTO apikeys (identifier, key_sha256, key_prefix) VALUES ('k', 'aa', 'ofk_')"
    )
    _run(
        empty_database,
        "INSERT INTO apikey_usage (key_identifier, source, requests_total) VALUES ('k', 'dp/1', 3)",
    )
    assert _run(empty_database, "SELECT frontends, active, rate_limit_requests_per_second FROM apikeys") == [
        ([], True, 0.0)
    ]
    _run(empty_database, "DELETE FROM apikeys")
    assert _run(empty_database, "SELECT count(*) FROM apikey_usage") == [(0,)]


def test_downgrade_drops_them_and_upgrade_brings_them_back(empty_database: str) -> None:
    upgrade(empty_database, THIS)
    _run(empty_database, "INSERT INTO frontends (identifier, allow_model_management) VALUES ('f', true)")
    _downgrade(empty_database, BEFORE)
    assert current_revision(empty_database) == BEFORE
    tables = _run(empty_database, "SELECT tablename FROM pg_tables WHERE tablename LIKE 'apikey%'")
    assert tables == []
    columns = _run(
        empty_database,
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'frontends' "
        f"AND column_name IN ({', '.join(repr(f) for f in FLAGS)})",
    )
    assert columns == []
    upgrade(empty_database)
    assert _run(empty_database, "SELECT allow_model_management FROM frontends") == [(False,)]
