"""Fixtures for data-plane integration tests: a bus of the test's own, a snapshot writer, settings,
and a running data plane."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest

from dataplane.settings import DataPlaneSettings
from ollamaflow.sim import running_sim
from shared.bus import Bus, BusNames
from tests.dataplane.harness import RunningDataPlane, SnapshotWriter, running_dataplane
from tests.support.secrets import TEST_KEYRING
from tests.support.signing import SnapshotKeys


@pytest.fixture
async def bus(nats_url: str, bus_namespace: str) -> AsyncIterator[Bus]:
    bus = Bus(nats_url, BusNames(bus_namespace), client_name="dataplane-test")
    await bus.connect()
    try:
        yield bus
    finally:
        await bus.close()


@pytest.fixture
def writer(bus: Bus) -> SnapshotWriter:
    return SnapshotWriter(bus)


@pytest.fixture
def dp_settings(nats_url: str, bus_namespace: str, snapshot_keys: SnapshotKeys) -> DataPlaneSettings:
    return DataPlaneSettings(
        snapshot_public_key_files=(snapshot_keys.public,),
        nats_url=nats_url,
        bus_namespace=bus_namespace,
        dataplane_id="dp-" + uuid.uuid4().hex[:8],
        report_interval=0.2,
        snapshot_poll_interval=0.5,
        upstream_connect_timeout=2.0,
        secrets=TEST_KEYRING,
    )


@pytest.fixture
async def backend_urls() -> AsyncIterator[list[str]]:
    """Three simulated Ollama backends."""
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(running_sim()) for _ in range(3)]


@pytest.fixture
async def dp(dp_settings: DataPlaneSettings) -> AsyncIterator[RunningDataPlane]:
    """A data plane serving on a free port, reading the test's bus."""
    async with running_dataplane(dp_settings) as running:
        yield running
