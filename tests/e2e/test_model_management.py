"""Model management through a frontend, end to end: a real control plane (Postgres, NATS), a real data
plane and simulated Ollama backends, driven by the official ``ollama`` client.

Configuration goes in through the admin API; the client only ever talks to the data plane.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import ollama
import pytest

from controlplane.migrate import upgrade
from controlplane.settings import Settings
from dataplane.settings import DataPlaneSettings
from ollamaflow.sim import running_sim
from shared.bus import Bus, BusNames
from shared.models import model_key
from shared.wire.models import ModelRequest, decode_reply, encode
from tests.controlplane.harness import fresh_database, running_controlplane
from tests.dataplane.harness import RunningDataPlane, eventually, running_dataplane
from tests.support.secrets import TEST_KEYRING
from tests.support.signing import SnapshotKeys

pytestmark = pytest.mark.slow

TOKEN = "model-management-token"
# Management through a frontend is off by default; these frontends allow it, and their pulls add to
# RequiredModels (as OllamaFlow's always do).
MANAGED = {"AllowModelManagement": True, "PullAddsRequiredModels": True}


@dataclass
class Cluster:
    admin: httpx.AsyncClient
    dataplane: RunningDataPlane
    sims: dict[str, str]  # backend id -> simulator URL, in the frontend's order
    client: ollama.AsyncClient
    bus: Bus  # the cluster's bus, as the test's own client

    async def tags(self, ident: str) -> set[str]:
        async with httpx.AsyncClient() as http:
            models = (await http.get(self.sims[ident] + "/api/tags")).json()["models"]
        return {model_key(m["name"]) for m in models}

    async def stats(self, ident: str) -> dict:
        async with httpx.AsyncClient() as http:
            return (await http.get(self.sims[ident] + "/_sim/stats")).json()

    def listed(self, ident: str, model: str) -> bool:
        """Whether the data plane's snapshot lists ``model`` on backend ``ident``."""
        snapshot = self.dataplane.app.state.snapshot
        view = next((b for b in snapshot.content.backends if b.id == ident), None) if snapshot else None
        return view is not None and model_key(model) in {model_key(n) for n in view.models}

    async def served_by(self, model: str) -> httpx.Response:
        async with httpx.AsyncClient() as http:
            body = {"model": model, "prompt": "hi", "stream": False}
            return await http.post(self.dataplane.url + "/api/generate", json=body, timeout=30)

    async def routes(self, model: str, *, on: set[str], within: float = 30.0) -> None:
        """Until the data plane lists ``model`` on exactly the backends ``on`` and a generate
        with it succeeds (404 when ``on`` is empty) on one of them."""
        deadline = asyncio.get_running_loop().time() + within
        while True:
            if {ident for ident in self.sims if self.listed(ident, model)} == on:
                served = await self.served_by(model)
                if not on and served.status_code == 404:
                    return
                if on and served.status_code == 200 and served.headers["x-ollamaflow-backend"] in on:
                    return
            assert asyncio.get_running_loop().time() < deadline, f"{model} does not route to {on}"
            await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
def migrated_url(database_url: str) -> Iterator[str]:
    with fresh_database(database_url) as url:
        upgrade(url)
        yield url


@pytest.fixture
async def cluster(migrated_url: str, nats_url: str, snapshot_keys: SnapshotKeys) -> AsyncIterator[Cluster]:
    namespace = "t" + uuid.uuid4().hex[:12]
    settings = Settings(
        database_url=migrated_url,
        admin_tokens=(TOKEN,),
        nats_url=nats_url,
        bus_namespace=namespace,
        health_interval=0.3,
        health_timeout=2.0,
        inventory_interval=5.0,
        sync_retry_delay=0.2,
        sync_max_attempts=2,
        secrets=TEST_KEYRING,
        snapshot_signing_key_file=snapshot_keys.private,
    )
    dp_settings = DataPlaneSettings(
        snapshot_public_key_files=(snapshot_keys.public,),
        nats_url=nats_url,
        bus_namespace=namespace,
        dataplane_id="dp-" + uuid.uuid4().hex[:8],
        report_interval=0.3,
        snapshot_poll_interval=0.5,
        secrets=TEST_KEYRING,
    )
    async with AsyncExitStack() as stack:
        # Slow enough that a pull shows progress between its first and its last line.
        sims = {
            ident: await stack.enter_async_context(running_sim(models=models, tokens_per_second=50))
            for ident, models in (("first", ("llama3.2:latest",)), ("second", ("llama3.2:latest",)))
        }
        plane = stack.enter_context(running_controlplane(settings))
        admin = await stack.enter_async_context(
            httpx.AsyncClient(base_url=plane.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        )
        for frontend in ("f", "g", "openai-only", "down"):  # the database is shared by the module's tests
            await admin.delete(f"/v1.0/frontends/{frontend}")
        for ident in (*sims, "vllm", "dead"):
            await admin.delete(f"/v1.0/backends/{ident}")
        for ident, url in sims.items():
            port = int(url.rsplit(":", 1)[1])
            body = {"Identifier": ident, "Hostname": "127.0.0.1", "Port": port}
            assert (await admin.put("/v1.0/backends", json=body)).status_code == 201
        body = {"Identifier": "f", "Hostname": "*", "Backends": list(sims), **MANAGED}
        assert (await admin.put("/v1.0/frontends", json=body)).status_code == 201
        dataplane = await stack.enter_async_context(running_dataplane(dp_settings))
        bus = Bus(nats_url, BusNames(namespace), client_name="model-management-test")
        await bus.connect()
        stack.push_async_callback(bus.close)
        cluster = Cluster(admin, dataplane, sims, ollama.AsyncClient(host=dataplane.url, timeout=60), bus)

        def ready() -> bool:
            snapshot = dataplane.app.state.snapshot
            views = snapshot.content.backends if snapshot else ()
            return len(views) == 2 and all(v.healthy and v.models_known for v in views)

        await eventually(ready, 30, "both backends healthy with their models read, in the data plane")
        await eventually(
            lambda: (models := plane.plane.models) is not None and models.serving,
            30,
            "the control plane serving model requests",
        )
        yield cluster


async def required_models(cluster: Cluster) -> list[str]:
    return (await cluster.admin.get("/v1.0/frontends/f")).json()["RequiredModels"]


async def test_pull_streams_progress_and_the_model_is_required_and_routes(cluster: Cluster) -> None:
    parts = [part async for part in await cluster.client.pull("smollm:135m", stream=True)]
    assert parts[0].status == "pulling manifest"
    assert parts[-1].status == "success"
    layers = [p for p in parts if p.digest]
    assert layers and all(p.status == f"pulling {p.digest[7:19]}" for p in layers)
    assert any(p.completed and p.total and p.completed < p.total for p in layers), "no progress seen"
    weights = [p for p in layers if p.total and p.total > 10_000]
    assert weights[-1].completed == weights[-1].total  # averaged over both backends, and complete
    assert {model_key("smollm:135m")} <= await cluster.tags("first") & await cluster.tags("second")
    assert await required_models(cluster) == ["smollm:135m"]
    # The answer's end waits (bounded) for this data plane's snapshot, so this normally holds at once.
    await cluster.routes("smollm:135m", on={"first", "second"})

    # Already everywhere: success at once (the finished layers shown complete), nothing pulled again.
    again = [part async for part in await cluster.client.pull("SmolLM:135m", stream=True)]
    assert again[0].status == "pulling manifest" and again[-1].status == "success"
    shown = [(p.digest[7:12], p.completed, p.total) for p in again if p.digest]
    assert all(done == total for _, done, total in shown), shown
    assert (await cluster.stats("first"))["by_path"]["/api/pull"] == 1
    assert await required_models(cluster) == ["smollm:135m"]

    # Not streamed: one final object.
    whole = await cluster.client.pull("qwen3:0.6b")
    assert whole.status == "success"
    assert await required_models(cluster) == ["smollm:135m", "qwen3:0.6b"]
    assert model_key("qwen3:0.6b") in await cluster.tags("second")


async def test_a_pull_that_fails_ends_with_the_backends_error(cluster: Cluster) -> None:
    with pytest.raises(ollama.ResponseError) as streamed:
        async for _ in await cluster.client.pull("missing-model", stream=True):
            pass
    assert "file does not exist" in streamed.value.error
    with pytest.raises(ollama.ResponseError) as whole:
        await cluster.client.pull("missing-model")
    assert whole.value.status_code == 500 and "file does not exist" in whole.value.error
    # Once every attempt (two here) failed on every backend it is no longer required: a failed
    # pull leaves nothing behind, and the name is Ollama's 404 again rather than "being pulled".
    deadline = asyncio.get_running_loop().time() + 30
    while await required_models(cluster) != []:
        assert asyncio.get_running_loop().time() < deadline, "the failed model stayed required"
        await asyncio.sleep(0.05)
    await cluster.routes("missing-model", on=set())
    with pytest.raises(ollama.ResponseError) as nothing:
        await cluster.client.delete("missing-model")
    assert nothing.value.status_code == 404


async def test_copy_and_delete_reach_every_backend_and_routing(cluster: Cluster) -> None:
    assert (await cluster.client.copy("llama3.2", "backup")).status == "success"
    assert model_key("backup") in await cluster.tags("first") & await cluster.tags("second")
    await cluster.routes("backup", on={"first", "second"})

    assert (await cluster.client.delete("backup")).status == "success"
    assert model_key("backup") not in await cluster.tags("first") | await cluster.tags("second")
    await cluster.routes("backup", on=set())

    with pytest.raises(ollama.ResponseError) as gone:
        await cluster.client.delete("backup")
    assert gone.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as no_source:
        await cluster.client.copy("no-such-model", "x")
    assert no_source.value.status_code == 404

    # A required model that is deleted is no longer required, nor pulled back.
    await cluster.client.pull("smollm:135m")
    assert await required_models(cluster) == ["smollm:135m"]
    await cluster.client.delete("smollm:135m")
    assert await required_models(cluster) == []
    assert model_key("smollm:135m") not in await cluster.tags("first") | await cluster.tags("second")


async def test_create_from_a_blob_and_push_land_on_one_backend(cluster: Cluster, tmp_path: Path) -> None:
    weights = tmp_path / "tiny.gguf"
    weights.write_bytes(b"GGUF" + bytes(range(256)) * 256)
    digest = await cluster.client.create_blob(weights)
    assert digest == "sha256:" + hashlib.sha256(weights.read_bytes()).hexdigest()
    async with httpx.AsyncClient() as http:
        held = {
            ident: (await http.head(f"{url}/api/blobs/{digest}")).status_code
            for ident, url in cluster.sims.items()
        }
        assert held == {"first": 200, "second": 404}  # the first healthy Ollama backend of the frontend
        via_frontend = await http.head(f"{cluster.dataplane.url}/api/blobs/{digest}")
        assert via_frontend.status_code == 200 and via_frontend.headers["x-ollamaflow-backend"] == "first"

    parts = [
        p async for p in await cluster.client.create("tiny:1b", files={"tiny.gguf": digest}, stream=True)
    ]
    assert parts[-1].status == "success"
    assert model_key("tiny:1b") in await cluster.tags("first")
    await cluster.routes("tiny:1b", on={"first"})  # refreshed at once, not an inventory interval later

    helper = await cluster.client.create("helper", from_="llama3.2", system="You help.")
    assert helper.status == "success"
    await cluster.routes("helper", on={"first"})

    pushed = [p async for p in await cluster.client.push("tiny:1b", stream=True)]
    assert pushed[0].status == "retrieving manifest" and pushed[-1].status == "success"
    assert (await cluster.stats("first"))["by_path"]["/api/push"] == 1
    assert "/api/push" not in (await cluster.stats("second"))["by_path"]


async def test_frontends_without_a_healthy_ollama_backend(cluster: Cluster) -> None:
    async with running_sim(format="openai", models=("served-model",)) as vllm:
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        with closed:
            backends = {
                "vllm": {"Hostname": "127.0.0.1", "Port": int(vllm.rsplit(":", 1)[1]), "ApiFormat": "OpenAI"},
                "dead": {"Hostname": "127.0.0.1", "Port": closed.getsockname()[1]},
            }
            for ident, body in backends.items():
                resp = await cluster.admin.put("/v1.0/backends", json={"Identifier": ident, **body})
                assert resp.status_code == 201
            for ident, host in (("openai-only", "openai.local"), ("down", "down.local")):
                body = {
                    "Identifier": ident,
                    "Hostname": host,
                    "Backends": ["vllm" if ident != "down" else "dead"],
                    **MANAGED,
                }
                assert (await cluster.admin.put("/v1.0/frontends", json=body)).status_code == 201

            def known() -> bool:
                snapshot = cluster.dataplane.app.state.snapshot
                views = {b.id: b for b in snapshot.content.backends} if snapshot else {}
                vllm_view, dead_view = views.get("vllm"), views.get("dead")
                return bool(vllm_view and vllm_view.models_known and dead_view and dead_view.health_checked)

            await eventually(known, 30, "the new backends probed, in the data plane")
            openai_only = ollama.AsyncClient(host=cluster.dataplane.url, headers={"Host": "openai.local"})
            assert (await openai_only.pull("served-model")).status == "success"
            with pytest.raises(ollama.ResponseError) as cannot:
                await openai_only.pull("llama3.2")
            assert cannot.value.status_code == 404 and "cannot pull" in cannot.value.error
            with pytest.raises(ollama.ResponseError) as no_create:
                await openai_only.create("x", from_="served-model")
            assert no_create.value.status_code == 501

            down = ollama.AsyncClient(host=cluster.dataplane.url, headers={"Host": "down.local"})
            with pytest.raises(ollama.ResponseError) as unavailable:
                await down.pull("llama3.2")
            assert (
                unavailable.value.status_code == 503
                and "no healthy Ollama backend" in unavailable.value.error
            )
            frontend = (await cluster.admin.get("/v1.0/frontends/down")).json()
            assert frontend["RequiredModels"] == ["llama3.2"]  # pulled once the backend is healthy
            assert (await cluster.admin.get("/v1.0/frontends/openai-only")).json()["RequiredModels"] == []


async def test_delete_keeps_a_model_another_frontend_requires_on_a_shared_backend(cluster: Cluster) -> None:
    assert (await cluster.client.pull("keep-me")).status == "success"  # onto both backends
    body = {"Identifier": "g", "Hostname": "g.local", "Backends": ["second"], "RequiredModels": ["keep-me"]}
    assert (await cluster.admin.put("/v1.0/frontends", json=body)).status_code == 201
    assert (await cluster.client.delete("keep-me")).status == "success"
    assert await required_models(cluster) == []
    assert model_key("keep-me") not in await cluster.tags("first")
    assert model_key("keep-me") in await cluster.tags("second")
    assert (await cluster.admin.get("/v1.0/frontends/g")).json()["RequiredModels"] == ["keep-me"]


async def test_a_pull_may_bring_a_model_without_making_it_required(cluster: Cluster) -> None:
    patch = {"PullAddsRequiredModels": False}
    assert (await cluster.admin.patch("/v1.0/frontends/f", json=patch)).status_code == 200
    parts = [part async for part in await cluster.client.pull("smollm:135m", stream=True)]
    assert parts[0].status == "pulling manifest" and parts[-1].status == "success"
    assert any(p.digest and p.completed and p.total and p.completed < p.total for p in parts), "no progress"
    assert {model_key("smollm:135m")} <= await cluster.tags("first") & await cluster.tags("second")
    await cluster.routes("smollm:135m", on={"first", "second"})
    assert await required_models(cluster) == []

    # The control plane held the requirement only until the pulls ended: it lets go of the jobs,
    # pulls nothing again and removes nothing.
    async def no_pulls() -> bool:
        return (await cluster.admin.get("/v1.0/pulls")).json() == []

    deadline = asyncio.get_running_loop().time() + 30
    while not await no_pulls():
        assert asyncio.get_running_loop().time() < deadline, "the held pulls stayed"
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)
    for ident in cluster.sims:
        assert (await cluster.stats(ident))["by_path"]["/api/pull"] == 1
        assert model_key("smollm:135m") in await cluster.tags(ident)

    # A failed one leaves nothing behind either, and a delete still removes a pulled model.
    with pytest.raises(ollama.ResponseError) as failed:
        await cluster.client.pull("missing-model")
    assert failed.value.status_code == 500 and "file does not exist" in failed.value.error
    assert await required_models(cluster) == []
    assert (await cluster.client.delete("smollm:135m")).status == "success"
    await cluster.routes("smollm:135m", on=set())


async def test_model_management_is_refused_where_the_frontend_does_not_allow_it(cluster: Cluster) -> None:
    closed = await cluster.admin.patch("/v1.0/frontends/f", json={"AllowModelManagement": False})
    assert closed.status_code == 200
    await eventually(
        lambda: not cluster.dataplane.app.state.table.frontend_for("x").frontend.allow_model_management,
        10,
        "the data plane applying the change",
    )
    with pytest.raises(ollama.ResponseError) as refused:
        await cluster.client.pull("smollm:135m")
    assert refused.value.status_code == 403 and "AllowModelManagement" in refused.value.error
    with pytest.raises(ollama.ResponseError) as no_copy:
        await cluster.client.copy("llama3.2", "backup")
    assert no_copy.value.status_code == 403
    assert await required_models(cluster) == []
    assert "/api/pull" not in (await cluster.stats("first"))["by_path"]
    # A data plane whose snapshot is behind is refused by the control plane too.
    for action in ("pull", "delete", "copy"):
        ask = ModelRequest(action=action, frontend_id="f", model="llama3.2", destination="backup")
        data = await cluster.bus.request(cluster.bus.names.models_subject, encode(ask), wait=10)
        reply = decode_reply(data)
        assert reply.status == 403 and "AllowModelManagement is false" in reply.error, action
