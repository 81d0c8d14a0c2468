"""A publish that fails makes the control plane say so: ``/readyz`` is 503 and ``/v1.0/dataplanes``
carries the reason, until a publish works again."""

from __future__ import annotations

import httpx
import nats
import pytest
from nats.js.api import KeyValueConfig, StorageType

from controlplane.admin.cluster import PUBLISH_ERROR_HEADER
from controlplane.settings import Settings
from tests.controlplane.harness import eventually, running_controlplane


@pytest.mark.usefixtures("clean_database_url")
async def test_a_failing_publish_makes_readyz_and_dataplanes_say_so_until_it_works_again(
    settings: Settings,
) -> None:
    nc = await nats.connect(settings.nats_url)
    js = nc.jetstream()
    # A bucket that takes the control-plane lease (a few hundred bytes) but no value as large as the
    # snapshot of the frontend below: every snapshot write is refused by the server.
    await js.create_key_value(
        KeyValueConfig(bucket=settings.bus_namespace, max_value_size=1024, storage=StorageType.FILE)
    )
    try:
        with running_controlplane(settings, wait_ready=False) as running:
            async with httpx.AsyncClient(
                base_url=running.url, headers={"Authorization": f"Bearer {settings.admin_tokens[0]}"}
            ) as client:
                frontend = {
                    "Identifier": "big",
                    "Name": "n" * 256,
                    "RequiredModels": [f"model-{i:03}" * 20 for i in range(8)],
                }
                created = await client.put("/v1.0/frontends", json=frontend)
                assert created.status_code == 201, created.text

                async def refused() -> bool:
                    ready = await client.get("/readyz")
                    return ready.status_code == 503 and "cannot be published" in ready.json()["detail"]

                await eventually(refused, what="readyz saying the publish fails")
                listed = await client.get("/v1.0/dataplanes")
                assert listed.status_code == 200 and listed.json() == []
                assert listed.headers[PUBLISH_ERROR_HEADER]
                assert running.plane.publish_status.last_error

                await js.delete_key_value(settings.bus_namespace)  # the publisher makes a sound one

                async def ready() -> bool:
                    published = running.plane.publish_status.revision >= 1
                    return published and (await client.get("/readyz")).status_code == 200

                await eventually(ready, what="readyz back to 200")
                listed = await client.get("/v1.0/dataplanes")
                assert PUBLISH_ERROR_HEADER not in listed.headers
    finally:
        await nc.close()
