"""`ollamaflow pull` and ``POST /v1.0/frontends/{id}/pull`` against simulated Ollama backends: the
pull starts where the model lacks, its progress is followed to the end, a failure exits 1."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess

import httpx
from typer.testing import CliRunner

from ollamaflow.cli import app
from ollamaflow.sim import running_sim
from tests.controlplane.conftest import TOKEN
from tests.controlplane.harness import RunningControlPlane, eventually
from tests.controlplane.monitoring_support import port_of, sim_stats
from tests.support.processes import CLI, stop


async def _pull(plane: RunningControlPlane, *args: str):
    """`ollamaflow pull ARGS` in a thread: the simulators run on this test's event loop."""
    env = {"OLLAMAFLOW_URL": None, "OLLAMAFLOW_ADMIN_TOKEN": None, "COLUMNS": "160"}
    argv = ["pull", *args, "--url", plane.url, "--token", TOKEN]
    result = await asyncio.to_thread(CliRunner(env=env).invoke, app, argv)
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    return result


async def _fleet(admin: httpx.AsyncClient, backends: dict[str, str], **frontend: object) -> None:
    for ident, url in backends.items():
        body = {"Identifier": ident, "Hostname": "127.0.0.1", "Port": port_of(url)}
        if ident.startswith("oa"):  # an OpenAI-compatible server (the simulator's openai format)
            body |= {"ApiFormat": "OpenAI", "HealthCheckUrl": "/v1/models"}
        assert (await admin.put("/v1.0/backends", json=body)).status_code == 201
    body = {"Identifier": "f", "Backends": list(backends), **frontend}
    assert (await admin.put("/v1.0/frontends", json=body)).status_code == 201

    async def read() -> bool:
        health = (await admin.get("/v1.0/backends/health")).json()
        return all(b["Healthy"] and b["Models"] for b in health)

    await eventually(read, what="the backends probed and their models read")


async def test_pull_follows_every_backend_to_the_end(
    probing_admin: httpx.AsyncClient, probing_plane: RunningControlPlane
) -> None:
    async with (
        running_sim(models=("llama3.2:latest",), tokens_per_second=40) as lacking,
        running_sim(models=("llama3.2:latest", "smollm:135m")) as having,
        running_sim(models=("llama3.2:latest",), format="openai") as openai,
    ):
        await _fleet(probing_admin, {"lacking": lacking, "having": having, "oa": openai})
        result = await _pull(probing_plane, "SmolLM:135m", "--frontend", "f", "--json")
        assert result.exit_code == 0, result.stderr
        started, *progress = [json.loads(line) for line in result.stdout.splitlines()]
        assert started["Pulling"] == ["lacking"] and started["Present"] == ["having"]
        assert started["Skipped"] == ["oa"] and started["Jobs"][0]["Backend"] == "lacking"
        assert all(p["Backend"] == "lacking" for p in progress) and progress[-1]["State"] == "done"
        assert any(0 < p["CompletedBytes"] < p["TotalBytes"] for p in progress), "no progress in between"
        assert len(progress[-1]["Layers"]) == 3  # the simulator's weights, template and params
        assert progress[-1]["CompletedBytes"] == sum(
            layer["Total"] for layer in progress[-1]["Layers"].values()
        )
        assert (await sim_stats(having))["by_path"].get("/api/pull", 0) == 0
        # PullAddsRequiredModels is false: the configuration stays as it was.
        assert (await probing_admin.get("/v1.0/frontends/f")).json()["RequiredModels"] == []

        async def arrived() -> bool:
            models = {m["Name"].lower(): m for m in (await probing_admin.get("/v1.0/models")).json()}
            entry = models.get("smollm:135m")
            return bool(entry and {"having", "lacking"} <= set(entry["AvailableOn"]))

        await eventually(arrived, what="the pulled model in the inventory")
        again = await _pull(probing_plane, "smollm:135m", "--frontend", "f", "--no-watch")
        assert again.exit_code == 0, again.stderr
        assert "lacking: has smollm:135m already" in again.stdout and "oa: skipped" in again.stdout


async def test_pull_with_bars_and_a_failing_pull(
    probing_admin: httpx.AsyncClient, probing_plane: RunningControlPlane
) -> None:
    async with running_sim(models=("llama3.2:latest",), tokens_per_second=100) as sim:
        await _fleet(probing_admin, {"b": sim}, PullAddsRequiredModels=True)
        shown = await _pull(probing_plane, "qwen3:0.6b", "--frontend", "f")
        assert shown.exit_code == 0, shown.stderr
        assert "pulling qwen3:0.6b onto b" in shown.stdout and "b: done" in shown.stdout
        # The frontend adds what it pulls to RequiredModels: the admin's pull keeps that rule.
        assert (await probing_admin.get("/v1.0/frontends/f")).json()["RequiredModels"] == ["qwen3:0.6b"]

        failed = await _pull(probing_plane, "missing-model", "--frontend", "f")
        assert failed.exit_code == 1
        assert "b: failed: pull model manifest: file does not exist" in failed.stdout
        assert failed.stderr == "ollamaflow: pulling missing-model failed on b\n"


async def test_ctrl_c_stops_watching_not_the_pull(
    probing_admin: httpx.AsyncClient, probing_plane: RunningControlPlane
) -> None:
    # Ten progress steps at 3 a second: the pull outlasts the Ctrl-C by seconds, even on a busy
    # machine (at 8 a second it once ended first, and the watch with it, exit 0).
    async with running_sim(models=("llama3.2:latest",), tokens_per_second=3) as sim:
        await _fleet(probing_admin, {"b": sim})
        argv = [*CLI, "pull", "qwen3:0.6b", "--frontend", "f", "--json", "--url", probing_plane.url]
        env = {**os.environ, "OLLAMAFLOW_ADMIN_TOKEN": TOKEN}
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # noqa: ASYNC220
        try:
            assert proc.stdout is not None and proc.stderr is not None
            started = json.loads(await asyncio.to_thread(proc.stdout.readline))
            assert started["Pulling"] == ["b"]
            proc.send_signal(signal.SIGINT)
            assert await asyncio.to_thread(proc.wait, 10) == 130
            assert "stopped watching" in proc.stderr.read().decode()
        finally:
            stop(proc)

        async def arrived() -> bool:
            models = {m["Name"]: m for m in (await probing_admin.get("/v1.0/models")).json()}
            return "qwen3:0.6b" in models and models["qwen3:0.6b"]["AvailableOn"] == ["b"]

        await eventually(arrived, within=20, what="the pull to go on to the end")


async def test_a_cancelled_pull_ends_the_watch(
    probing_admin: httpx.AsyncClient, probing_plane: RunningControlPlane
) -> None:
    async with running_sim(models=("llama3.2:latest",), tokens_per_second=8) as sim:
        await _fleet(probing_admin, {"b": sim})
        watching = asyncio.create_task(_pull(probing_plane, "qwen3:0.6b", "--frontend", "f"))

        async def pulling() -> bool:
            return [p["State"] for p in (await probing_admin.get("/v1.0/pulls")).json()] == ["pulling"]

        await eventually(pulling, what="the pull to start")
        assert (await probing_admin.patch("/v1.0/backends/b", json={"Active": False})).status_code == 200
        result = await asyncio.wait_for(watching, 10)
        assert result.exit_code == 1
        assert "b: failed: pull cancelled: the model is no longer required there" in result.stdout
