"""The control plane and real data planes together: shares computed from the data planes' own reports
reach them, and the admin dry-run is answered by one of them from its routing table."""

from __future__ import annotations

import contextlib
import dataclasses
import uuid

import httpx

from controlplane.settings import Settings
from dataplane.settings import DataPlaneSettings
from shared.snapshot import Snapshot
from tests.controlplane.conftest import TOKEN
from tests.controlplane.harness import eventually, running_controlplane, watch_snapshots
from tests.dataplane.harness import running_dataplane
from tests.support.secrets import TEST_KEYRING
from tests.support.signing import SnapshotKeys


def _dataplane_settings(settings: Settings, keys: SnapshotKeys) -> DataPlaneSettings:
    return DataPlaneSettings(
        snapshot_public_key_files=(keys.public,),
        nats_url=settings.nats_url,
        bus_namespace=settings.bus_namespace,
        dataplane_id="dp-" + uuid.uuid4().hex[:8],
        report_interval=0.2,
        snapshot_poll_interval=0.5,
        secrets=TEST_KEYRING,
    )


def _b1_slots(snapshot: Snapshot) -> dict[str, int]:
    return {
        d.id: d.shares["b1"].max_parallel for d in snapshot.content.cluster.dataplanes if "b1" in d.shares
    }


async def test_two_data_planes_share_the_limit_and_answer_dry_runs(
    settings: Settings, snapshot_keys: SnapshotKeys
) -> None:
    # Data planes report every 0.2 s here; a short TTL keeps the test's view of them current.
    cp_settings = dataclasses.replace(settings, dataplane_ttl=3.0)
    one, two = _dataplane_settings(settings, snapshot_keys), _dataplane_settings(settings, snapshot_keys)
    with running_controlplane(cp_settings) as running:
        async with (
            httpx.AsyncClient(
                base_url=running.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
            ) as admin,
            watch_snapshots(settings.nats_url, settings.bus_namespace) as watch,
            contextlib.AsyncExitStack() as stack,
        ):
            for backend in ("b1", "b2"):
                resp = await admin.put(
                    "/v1.0/backends",
                    json={
                        "Identifier": backend,
                        "Hostname": "127.0.0.1",
                        "Port": 9,  # nothing is sent: a dry-run never reaches a backend
                        "MaxParallelRequests": 4,
                        "RateLimitRequestsThreshold": 8,
                    },
                )
                assert resp.status_code == 201, resp.text
            resp = await admin.put(
                "/v1.0/frontends",
                json={
                    "Identifier": "f1",
                    "Hostname": "chat.test",
                    "Backends": ["b1", "b2"],
                    "LoadBalancing": "LeastConnections",
                },
            )
            assert resp.status_code == 201, resp.text
            planes = [await stack.enter_async_context(running_dataplane(s)) for s in (one, two)]

            # Both report in; the snapshot gives each half of every backend's limits, and they apply it.
            split = await watch.next(
                lambda s: _b1_slots(s) == {one.dataplane_id: 2, two.dataplane_id: 2}, within=30
            )
            for dp in split.content.cluster.dataplanes:
                assert dp.shares["b2"].rate_per_second == 4.0
            for plane in planes:
                await eventually(
                    lambda plane=plane: plane.app.state.revision >= split.revision,
                    within=15,
                    what="the split applied",
                )

            # A data plane starts answering dry-runs once its bus is connected: until then, 503.
            answers: list[httpx.Response] = []

            async def answered() -> bool:
                answers.append(
                    await admin.post(
                        "/v1.0/frontends/f1/explain",
                        json={"Model": "llama3", "Headers": {"X-Conversation-Id": "c-1"}},
                    )
                )
                return answers[-1].status_code != 503

            await eventually(answered, within=15, what="a data plane answering dry-runs")
            resp = answers[-1]
            assert resp.status_code == 200, resp.text
            reply = resp.json()
            assert reply["Dataplane"] in {one.dataplane_id, two.dataplane_id}
            assert reply["Revision"] >= split.revision
            assert (reply["Status"], reply["Error"]) == (200, "")
            assert (reply["Frontend"], reply["Strategy"]) == ("f1", "LeastConnections")
            assert sorted(reply["Order"]) == ["b1", "b2"]
            candidates = {c["Backend"]: c for c in reply["Candidates"]}
            assert set(candidates) == {"b1", "b2"}
            for candidate in candidates.values():
                assert candidate["Eligible"] is True
                assert (candidate["InFlight"], candidate["Limit"]) == (0, 2)  # its share, not the whole 4

            # A frontend that does not take embeddings: the data plane says what the client would get.
            assert (
                await admin.patch("/v1.0/frontends/f1", json={"AllowEmbeddings": False})
            ).status_code == 200
            changed = await watch.next(
                lambda s: any(f.id == "f1" and not f.allow_embeddings for f in s.content.frontends),
                after=split.revision,
            )
            for plane in planes:
                await eventually(
                    lambda plane=plane: plane.app.state.revision >= changed.revision,
                    within=15,
                    what="the change applied",
                )
            resp = await admin.post("/v1.0/frontends/f1/explain", json={"Model": "m", "Kind": "embeddings"})
            assert resp.status_code == 200, resp.text
            assert resp.json()["Status"] >= 400 and resp.json()["Error"]
            assert resp.json()["Order"] == []
