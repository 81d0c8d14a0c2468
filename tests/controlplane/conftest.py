"""Fixtures for the control-plane tests: a migrated database of their own, emptied before each test, and
a running control plane with admin clients."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from controlplane.migrate import upgrade
from controlplane.settings import Settings
from tests.controlplane.harness import RunningControlPlane, fresh_database, running_controlplane
from tests.support.secrets import TEST_KEYRING
from tests.support.signing import SnapshotKeys

TOKEN = "test-admin-token"
OTHER_TOKEN = "second-admin-token"


@pytest.fixture(scope="session")
def cp_database_url(database_url: str) -> Iterator[str]:
    """A migrated database used only by the control-plane tests."""
    with fresh_database(database_url) as url:
        upgrade(url)
        yield url


@pytest.fixture
def clean_database_url(cp_database_url: str) -> str:
    libpq = make_url(cp_database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    # A running control plane may be reading both tables in the other order: Postgres then breaks
    # the deadlock by aborting one side, which may be this TRUNCATE; it simply goes again.
    for attempt in range(5):
        try:
            with psycopg.connect(libpq, autocommit=True) as conn:
                conn.execute("TRUNCATE frontends, backends, apikeys, apikey_usage")
            break
        except psycopg.errors.DeadlockDetected:
            if attempt == 4:
                raise
    return cp_database_url


@pytest.fixture
def settings(
    clean_database_url: str, nats_url: str, bus_namespace: str, snapshot_keys: SnapshotKeys
) -> Settings:
    """Settings for a control plane a test starts itself (its own bus namespace).

    Backend monitoring is off: these tests configure backends at addresses nothing listens on, and
    no test sends traffic beyond 127.0.0.1. The monitoring tests switch it on.
    """
    return Settings(
        database_url=clean_database_url,
        admin_tokens=(TOKEN, OTHER_TOKEN),
        nats_url=nats_url,
        bus_namespace=bus_namespace,
        monitor_backends=False,
        secrets=TEST_KEYRING,
        snapshot_signing_key_file=snapshot_keys.private,
    )


@pytest.fixture(scope="module")
def controlplane(
    cp_database_url: str, nats_url: str, snapshot_keys: SnapshotKeys
) -> Iterator[RunningControlPlane]:
    """One control plane for a whole test module (the admin clients empty the tables before each test)."""
    settings = Settings(
        database_url=cp_database_url,
        admin_tokens=(TOKEN, OTHER_TOKEN),
        nats_url=nats_url,
        bus_namespace="t" + uuid.uuid4().hex[:12],
        monitor_backends=False,
        secrets=TEST_KEYRING,
        snapshot_signing_key_file=snapshot_keys.private,
    )
    with running_controlplane(settings) as running:
        yield running


@pytest.fixture
async def admin(
    controlplane: RunningControlPlane, clean_database_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the running control plane that sends a valid admin token; the tables start empty."""
    async with httpx.AsyncClient(
        base_url=controlplane.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    ) as client:
        yield client


@pytest.fixture
async def anonymous(
    controlplane: RunningControlPlane, clean_database_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=controlplane.url, timeout=10) as client:
        yield client


@pytest.fixture
def monitoring(settings: Settings) -> Settings:
    """Backend monitoring on, with short intervals (0.2 s probes) so thresholds pass in about a second."""
    return dataclasses.replace(
        settings,
        monitor_backends=True,
        health_interval=0.2,
        health_timeout=0.5,
        inventory_interval=0.3,
        sync_retry_delay=0.1,
        sync_max_attempts=2,
    )


@pytest.fixture
def probing_plane(monitoring: Settings) -> Iterator[RunningControlPlane]:
    with running_controlplane(monitoring) as running:
        yield running


@pytest.fixture
async def probing_admin(probing_plane: RunningControlPlane) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=probing_plane.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    ) as client:
        yield client
