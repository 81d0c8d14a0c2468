"""A real control plane and data plane on a bus with authentication, per-role permissions and signed
snapshots: everything the planes say to each other still works, and nothing they do is denied."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import ollama
import pytest

from controlplane.migrate import upgrade
from controlplane.settings import Settings
from dataplane.settings import DataPlaneSettings
from ollamaflow.sim import running_sim
from tests.controlplane.harness import eventually, fresh_database, running_controlplane
from tests.dataplane.harness import running_dataplane
from tests.support.auth_nats import auth_nats
from tests.support.signing import SnapshotKeys

pytestmark = pytest.mark.slow

TOKEN = "authenticated-bus-admin-token"


@pytest.fixture
def migrated_url(database_url: str) -> Iterator[str]:
    with fresh_database(database_url) as url:
        upgrade(url)
        yield url


async def test_a_cluster_on_an_authenticated_bus_routes_reports_explains_and_pulls(
    tmp_path: Path, migrated_url: str, snapshot_keys: SnapshotKeys, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="ollamaflow")
    namespace = "t" + uuid.uuid4().hex[:12]
    with auth_nats(tmp_path, namespace) as bus:
        settings = Settings(
            database_url=migrated_url,
            admin_tokens=(TOKEN,),
            nats_url=bus.url,
            bus_namespace=namespace,
            nats_user="controlplane",
            nats_password=bus.passwords["controlplane"],
            snapshot_signing_key_file=snapshot_keys.private,
            health_interval=0.3,
            health_timeout=2.0,
            inventory_interval=1.0,
            sync_retry_delay=0.2,
        )
        dp_settings = DataPlaneSettings(
            nats_url=bus.url,
            bus_namespace=namespace,
            nats_user="dataplane",
            nats_password=bus.passwords["dataplane"],
            snapshot_public_key_files=(snapshot_keys.public,),
            dataplane_id="dp-" + uuid.uuid4().hex[:8],
            report_interval=0.3,
            snapshot_poll_interval=0.5,
        )
        async with AsyncExitStack() as stack:
            sim = await stack.enter_async_context(
                running_sim(models=("llama3.2:latest",), tokens_per_second=200)
            )
            plane = stack.enter_context(running_controlplane(settings))
            admin = await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=plane.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
                )
            )
            port = int(sim.rsplit(":", 1)[1])
            backend = {"Identifier": "b", "Hostname": "127.0.0.1", "Port": port}
            assert (await admin.put("/v1.0/backends", json=backend)).status_code == 201
            frontend = {"Identifier": "f", "Hostname": "*", "Backends": ["b"], "AllowModelManagement": True}
            assert (await admin.put("/v1.0/frontends", json=frontend)).status_code == 201
            dp = await stack.enter_async_context(running_dataplane(dp_settings))

            # The signed snapshot reaches the data plane, which routes by it.
            def routed() -> bool:
                snapshot = dp.app.state.snapshot
                views = snapshot.content.backends if snapshot else ()
                return len(views) == 1 and views[0].healthy and views[0].models_known

            await eventually(routed, within=30, what="the backend healthy in the data plane")
            assert dp.app.state.snapshot is not None and dp.app.state.snapshot.signature is not None
            async with httpx.AsyncClient(timeout=30) as client:
                answer = await client.post(
                    dp.url + "/api/generate", json={"model": "llama3.2", "prompt": "hi", "stream": False}
                )
            assert answer.status_code == 200, answer.text

            # Its reports reach the control plane.
            async def listed() -> bool:
                planes = (await admin.get("/v1.0/dataplanes")).json()
                return any(p["Id"] == dp_settings.dataplane_id and p["AppliedRevision"] > 0 for p in planes)

            await eventually(listed, within=30, what="the data plane listed by the control plane")

            # The control plane's dry-run request reaches the data plane and its answer comes back.
            async def explained() -> bool:
                resp = await admin.post("/v1.0/frontends/f/explain", json={"Model": "llama3.2"})
                return resp.status_code == 200 and resp.json()["Dataplane"] == dp_settings.dataplane_id

            await eventually(explained, within=30, what="a routing dry-run answered")

            # A pull through the data plane goes to the control plane over the bus; progress comes back.
            await eventually(
                lambda: plane.plane.models.serving, within=30, what="the control plane serving model requests"
            )
            client = ollama.AsyncClient(host=dp.url, timeout=60)
            parts = [part async for part in await client.pull("smollm:135m", stream=True)]
            assert parts[0].status == "pulling manifest" and parts[-1].status == "success"

        denied = [r.getMessage() for r in caplog.records if "NATS" in r.getMessage()]
        assert denied == [], denied
