"""Session-wide real services: PostgreSQL and NATS with JetStream.

Where they come from, in order:
1. ``OLLAMAFLOW_TEST_DATABASE_URL`` / ``OLLAMAFLOW_TEST_NATS_URL`` (an existing server; a fresh database is
   created on it for this run and dropped afterwards);
2. testcontainers, when a Docker engine answers;
3. the embedded servers (``ollamaflow.embedded``) on free ports in a temporary directory.

Isolation: each test session gets its own database; each test gets its own bus namespace.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.services import nats_server, postgres_database
from tests.support.signing import SnapshotKeys, write_test_keys


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A SQLAlchemy URL (``postgresql+psycopg://…``) of an empty database for this test session."""
    with postgres_database(
        os.environ.get("OLLAMAFLOW_TEST_DATABASE_URL"), tmp_path_factory.mktemp("pg")
    ) as url:
        yield url


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A NATS URL with JetStream enabled."""
    with nats_server(os.environ.get("OLLAMAFLOW_TEST_NATS_URL"), tmp_path_factory.mktemp("nats")) as url:
        yield url


@pytest.fixture
def bus_namespace() -> str:
    """A bus namespace of this test's own, so tests never see each other's snapshots."""
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def snapshot_keys(tmp_path_factory: pytest.TempPathFactory) -> SnapshotKeys:
    """The test signing key pair as PEM files: control planes sign with it, data planes trust it."""
    return write_test_keys(tmp_path_factory.mktemp("keys"))
