"""The migration that makes frontend Hostnames unique (5d2f8c41a7e3), on a real database that already
holds frontends sharing a Hostname: it upgrades, leaves those out of the index, and the admin API
refuses any new duplicate while the old ones can still be changed."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy.exc import IntegrityError

from controlplane.migrate import current_revision, upgrade
from controlplane.settings import Settings
from tests.controlplane.conftest import TOKEN
from tests.controlplane.harness import fresh_database, running_controlplane
from tests.controlplane.test_migration_routing_settings import _downgrade, _run

BEFORE = "b8e41d07c2a9"
THIS = "5d2f8c41a7e3"
_INSERT = (
    "INSERT INTO frontends (identifier, hostname, active, created_utc, last_update_utc) "
    "VALUES ('{0}', '{1}', {2}, now(), now())"
)


@pytest.fixture
def empty_database(database_url: str) -> Iterator[str]:
    with fresh_database(database_url) as url:
        yield url


def _frontend(url: str, identifier: str, hostname: str, *, active: bool = True) -> None:
    _run(url, _INSERT.format(identifier, hostname, "true" if active else "false"))


def test_an_empty_database_gets_a_full_unique_index(empty_database: str) -> None:
    upgrade(empty_database, THIS)
    _frontend(empty_database, "a", "Chat.Example")
    with pytest.raises(IntegrityError):
        _frontend(empty_database, "b", "chat.example")
    _downgrade(empty_database, BEFORE)
    _frontend(empty_database, "b", "chat.example")  # no index any more
    assert current_revision(empty_database) == BEFORE


def test_existing_duplicates_upgrade_and_stay_as_they_were_routed(
    empty_database: str, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    upgrade(empty_database, BEFORE)
    # Routed before: "a1" (first active by id) for "*", "b2" (b1 is off) for "x.example".
    _frontend(empty_database, "a1", "*")
    _frontend(empty_database, "a2", "*")
    _frontend(empty_database, "b1", "x.example", active=False)
    _frontend(empty_database, "b2", "X.Example")
    _frontend(empty_database, "c", "own.example")

    with caplog.at_level("WARNING"):
        upgrade(empty_database)
    assert current_revision(empty_database) == THIS
    warning = next(r.getMessage() for r in caplog.records if "frontends_hostname_unique" in r.getMessage())
    assert "'a2'" in warning and "'b1'" in warning and "'a1'" not in warning and "'b2'" not in warning
    # The routed ones are indexed: a third "*" cannot even be written behind the API's back.
    with pytest.raises(IntegrityError):
        _frontend(empty_database, "a0", "*")

    plane_settings = dataclasses.replace(settings, database_url=empty_database)
    with (
        running_controlplane(plane_settings) as plane,
        httpx.Client(base_url=plane.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10) as admin,
    ):
        # The shadowed ones can still change, keeping their Hostname ...
        assert admin.patch("/v1.0/frontends/a2", json={"Name": "old twin"}).status_code == 200
        assert admin.put("/v1.0/frontends/b1", json={"Hostname": "x.example"}).status_code == 200
        # ... but no new duplicate comes in, through them or otherwise.
        taken = admin.patch("/v1.0/frontends/a2", json={"Hostname": "own.example"})
        assert taken.status_code == 409 and "'c'" in taken.json()["Description"]
        assert admin.put("/v1.0/frontends", json={"Identifier": "d", "Hostname": "*"}).status_code == 409
        # Given a Hostname of its own, a shadowed one is routable.
        assert admin.patch("/v1.0/frontends/a2", json={"Hostname": "a2.example"}).status_code == 200
