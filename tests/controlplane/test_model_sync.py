"""Model sync: RequiredModels pulled with live progress, failures, retries, parallelism, removal."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import httpx
from prometheus_client.parser import text_string_to_metric_families

from controlplane.settings import Settings
from ollamaflow.sim import running_sim
from tests.controlplane.conftest import TOKEN
from tests.controlplane.harness import eventually, running_controlplane
from tests.controlplane.monitoring_support import (
    port_of,
    sim_stats,
)


async def test_required_models_are_pulled_onto_exactly_the_backends_that_lack_them(
    probing_admin: httpx.AsyncClient, monitoring: Settings
) -> None:
    async with (
        running_sim(models=("llama3.2:latest",), tokens_per_second=40) as lacking,
        running_sim(models=("llama3.2:latest", "smollm:135m")) as having,
        httpx.AsyncClient(timeout=10) as client,
    ):
        for ident, url in (("lacking", lacking), ("having", having)):
            resp = await probing_admin.put(
                "/v1.0/backends", json={"Identifier": ident, "Hostname": "127.0.0.1", "Port": port_of(url)}
            )
            assert resp.status_code == 201
        await probing_admin.put(
            "/v1.0/frontends", json={"Identifier": "f", "Backends": ["lacking", "having"]}
        )

        async def both_known() -> bool:
            health = (await probing_admin.get("/v1.0/backends/health")).json()
            return all(b["Healthy"] and b["Models"] for b in health)

        await eventually(both_known, what="both backends probed and read")

        events: list[dict] = []
        async with probing_admin.stream("GET", "/v1.0/pulls/stream") as stream:
            assert stream.headers["content-type"].startswith("application/x-ndjson")
            resp = await probing_admin.patch(
                "/v1.0/frontends/f", json={"RequiredModels": ["SmolLM:135m", "llama3.2"]}
            )
            assert resp.status_code == 200
            async for line in stream.aiter_lines():
                events.append(json.loads(line))
                if events[-1]["State"] in ("done", "failed"):
                    break

        assert {(e["Backend"], e["Model"]) for e in events} == {("lacking", "SmolLM:135m")}
        assert events[-1]["State"] == "done" and events[-1]["Attempts"] == 1
        partial = [e for e in events if e["State"] == "pulling" and 0 < e["CompletedBytes"] < e["TotalBytes"]]
        assert partial, "no progress between start and end was seen"
        assert events[-1]["CompletedBytes"] == events[-1]["TotalBytes"] > 0

        pulls = (await probing_admin.get("/v1.0/pulls")).json()
        assert [(p["Backend"], p["State"]) for p in pulls] == [("lacking", "done")]
        assert await _pull_metrics(probing_admin) == {
            ("attempts", "lacking", "done"): 1,
            ("bytes", "lacking", ""): events[-1]["TotalBytes"],
        }
        assert (await client.get(having + "/_sim/stats")).json()["by_path"].get("/api/pull", 0) == 0

        async def arrived() -> bool:
            models = {m["Name"].lower(): m for m in (await probing_admin.get("/v1.0/models")).json()}
            entry = models.get("smollm:135m")
            return bool(entry and entry["AvailableOn"] == ["having", "lacking"] and entry["MissingOn"] == [])

        await eventually(arrived, what="the pulled model in the inventory")
        await asyncio.sleep(0.5)  # more looks at the backends: none may pull again
        assert (await client.get(lacking + "/_sim/stats")).json()["by_path"]["/api/pull"] == 1


async def test_a_failing_pull_shows_the_backends_message_and_is_retried(
    probing_admin: httpx.AsyncClient,
) -> None:
    async with running_sim(models=("llama3.2:latest",)) as sim:
        await probing_admin.put(
            "/v1.0/backends", json={"Identifier": "b", "Hostname": "127.0.0.1", "Port": port_of(sim)}
        )
        await probing_admin.put(
            "/v1.0/frontends",
            json={"Identifier": "f", "Backends": ["b"], "RequiredModels": ["missing-model"]},
        )

        async def failed() -> dict | None:
            pulls = (await probing_admin.get("/v1.0/pulls")).json()
            return pulls[0] if pulls and pulls[0]["State"] == "failed" else None

        await eventually(failed, what="the pull to fail for good")
        pull = await failed()
        assert pull is not None
        assert pull["Attempts"] == 2  # sync_max_attempts
        assert pull["Error"] == "pull model manifest: file does not exist"
        assert await _pull_metrics(probing_admin) == {
            ("attempts", "b", "retrying"): 1,
            ("attempts", "b", "failed"): 1,
        }
        models = {m["Name"]: m for m in (await probing_admin.get("/v1.0/models")).json()}
        assert models["missing-model"]["MissingOn"] == ["b"]

        # Dropping the requirement drops the job.
        await probing_admin.patch("/v1.0/frontends/f", json={"RequiredModels": []})
        await eventually(lambda: _no_pulls(probing_admin), what="the job to go")


async def _pull_metrics(admin: httpx.AsyncClient) -> dict[tuple[str, str, str], float]:
    """The pull counters of the control plane's /metrics: (attempts|bytes, backend, result) -> value."""
    text = (await admin.get("/metrics")).text
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "ollamaflow_controlplane_pull_attempts_total":
                found["attempts", sample.labels["backend"], sample.labels["result"]] = sample.value
            elif sample.name == "ollamaflow_controlplane_pulled_bytes_total":
                found["bytes", sample.labels["backend"], ""] = sample.value
    return found


async def _no_pulls(admin: httpx.AsyncClient) -> bool:
    return (await admin.get("/v1.0/pulls")).json() == []


async def test_unrequired_models_are_removed_only_when_asked(monitoring: Settings) -> None:
    settings = dataclasses.replace(monitoring, sync_remove_unrequired=True)
    models = ("llama3.2:latest", "qwen2.5:0.5b", "all-minilm:latest")
    with running_controlplane(settings) as plane:
        async with (
            running_sim(models=models) as pruned,
            running_sim(models=models) as untouched,
            httpx.AsyncClient(base_url=plane.url, headers={"Authorization": f"Bearer {TOKEN}"}) as admin,
        ):
            for ident, url in (("pruned", pruned), ("untouched", untouched)):
                body = {"Identifier": ident, "Hostname": "127.0.0.1", "Port": port_of(url)}
                assert (await admin.put("/v1.0/backends", json=body)).status_code == 201
            # "untouched" serves a frontend without RequiredModels: nothing is removed from it.
            await admin.put(
                "/v1.0/frontends",
                json={"Identifier": "f", "Backends": ["pruned"], "RequiredModels": ["LLAMA3.2"]},
            )
            await admin.put(
                "/v1.0/frontends", json={"Identifier": "g", "Hostname": "g.test", "Backends": ["untouched"]}
            )

            async def pruned_to_required() -> bool:
                health = (await admin.get("/v1.0/backends/pruned/health")).json()
                return health["Models"] == ["llama3.2:latest"]

            await eventually(pruned_to_required, what="unrequired models deleted")
            assert (await sim_stats(pruned))["by_path"].get("/api/delete") == 2
            assert (await sim_stats(untouched))["by_path"].get("/api/delete", 0) == 0
            health = (await admin.get("/v1.0/backends/untouched/health")).json()
            assert health["Models"] == sorted(models)


async def test_pulls_respect_the_per_backend_parallelism(monitoring: Settings) -> None:
    settings = dataclasses.replace(monitoring, sync_parallelism_per_backend=1, sync_parallelism=8)
    required = ["smollm:135m", "phi3:mini", "gemma2:2b"]
    with running_controlplane(settings) as plane:
        async with (
            running_sim(models=("llama3.2:latest",), tokens_per_second=100) as sim,
            httpx.AsyncClient(base_url=plane.url, headers={"Authorization": f"Bearer {TOKEN}"}) as admin,
        ):
            body = {"Identifier": "b", "Hostname": "127.0.0.1", "Port": port_of(sim)}
            assert (await admin.put("/v1.0/backends", json=body)).status_code == 201
            await admin.put("/v1.0/frontends", json={"Identifier": "f", "Backends": ["b"]})
            states: dict[str, str] = {}
            most_at_once = 0
            async with admin.stream("GET", "/v1.0/pulls/stream") as stream:
                await admin.patch("/v1.0/frontends/f", json={"RequiredModels": required})
                async for line in stream.aiter_lines():
                    event = json.loads(line)
                    states[event["Model"]] = event["State"]
                    most_at_once = max(most_at_once, sum(s == "pulling" for s in states.values()))
                    if len(states) == 3 and all(s == "done" for s in states.values()):
                        break
            assert most_at_once == 1
            assert (await sim_stats(sim))["by_path"]["/api/pull"] == 3
            await eventually(
                lambda: (sync := plane.plane.sync) is not None and sync.watchers == 0,
                what="the stream's subscription to end",
            )
