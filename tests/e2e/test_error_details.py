"""Details of a failure stay in the logs: a client gets a generic message naming its request id.

Found from outside: with Postgres gone, an unauthenticated ``/api/pull`` client was shown the raw
driver message (host, port). Now the control plane logs it under the request's id, and the client's
error names that id and nothing of the database.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import httpx
import pytest

from controlplane.settings import Settings
from dataplane.settings import DataPlaneSettings
from ollamaflow.sim import running_sim
from tests.controlplane.harness import drop_database, fresh_database, running_controlplane
from tests.dataplane.harness import RunningDataPlane, eventually, running_dataplane
from tests.support.secrets import TEST_KEYRING
from tests.support.signing import SnapshotKeys

pytestmark = pytest.mark.slow

TOKEN = "error-details-admin-token"


@pytest.fixture
async def cut_off(
    database_url: str, nats_url: str, snapshot_keys: SnapshotKeys
) -> AsyncIterator[tuple[RunningDataPlane, str]]:
    """A frontend served by a data plane whose control plane has just lost its database."""
    namespace = "t" + uuid.uuid4().hex[:12]
    async with AsyncExitStack() as stack:
        url = stack.enter_context(fresh_database(database_url))
        settings = Settings(
            database_url=url,
            admin_tokens=(TOKEN,),
            nats_url=nats_url,
            bus_namespace=namespace,
            secrets=TEST_KEYRING,
            snapshot_signing_key_file=snapshot_keys.private,
        )
        sim = await stack.enter_async_context(running_sim())
        plane = stack.enter_context(running_controlplane(settings))
        async with httpx.AsyncClient(
            base_url=plane.url, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as admin:
            port = int(sim.rsplit(":", 1)[1])
            body = {"Identifier": "b", "Hostname": "127.0.0.1", "Port": port}
            assert (await admin.put("/v1.0/backends", json=body)).status_code == 201
            body = {"Identifier": "f", "Hostname": "*", "Backends": ["b"], "AllowModelManagement": True}
            assert (await admin.put("/v1.0/frontends", json=body)).status_code == 201
        dp_settings = DataPlaneSettings(
            nats_url=nats_url,
            bus_namespace=namespace,
            dataplane_id="dp-errors",
            snapshot_public_key_files=(snapshot_keys.public,),
            secrets=TEST_KEYRING,
        )
        dataplane = await stack.enter_async_context(running_dataplane(dp_settings))
        await eventually(lambda: bool(dataplane.app.state.table.routes()), 30, "the frontend applied")
        await eventually(
            lambda: (models := plane.plane.models) is not None and models.serving,
            30,
            "the control plane serving model requests",
        )
        drop_database(url)
        yield dataplane, url


async def test_a_database_outage_is_not_described_to_the_client(
    cut_off: tuple[RunningDataPlane, str], caplog: pytest.LogCaptureFixture
) -> None:
    dataplane, url = cut_off
    async with httpx.AsyncClient(base_url=dataplane.url, timeout=30) as client:
        answer = await client.post("/api/pull", json={"model": "llama3.2", "stream": False})
    assert answer.status_code == 503, answer.text
    request_id = answer.headers["x-ollamaflow-request"]
    message = answer.json()["error"]
    assert request_id in message
    for detail in ("psycopg", "postgres", "127.0.0.1", "connection", "database", url.rsplit("/", 1)[-1]):
        assert detail not in message.lower(), message
    # The details are in the control plane's log, under the same id.
    logged = [r for r in caplog.records if request_id in r.getMessage()]
    assert logged and any(r.exc_info or r.exc_text for r in logged)  # the traceback, maybe redacted already
