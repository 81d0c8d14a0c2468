"""Model management routes of a running data plane without a control plane: the authoring routes go
to one backend, the ones that need the control plane say 503; read with the official ollama client."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import ollama
import pytest

from shared.snapshot import BackendView
from tests.dataplane.harness import RunningDataPlane, SnapshotWriter, serve_frontend

# Model management through a frontend is off unless the frontend allows it.
MANAGED = {"allow_model_management": True}


async def test_pull_delete_and_copy_say_503_when_no_control_plane_answers(
    dp: RunningDataPlane, writer: SnapshotWriter, backend_urls: list[str]
) -> None:
    await serve_frontend(writer, dp, [BackendView(id="a", base_url=backend_urls[0])], **MANAGED)
    client = ollama.AsyncClient(host=dp.url)

    async def streamed_pull() -> None:
        async for _ in await client.pull("llama3.2", stream=True):
            pass

    for call in (
        lambda: client.pull("llama3.2"),
        streamed_pull,
        lambda: client.delete("llama3.2"),
        lambda: client.copy("llama3.2", "other"),
    ):
        with pytest.raises(ollama.ResponseError) as refused:
            await call()
        assert refused.value.status_code == 503
        assert "no control plane answers" in refused.value.error
    async with httpx.AsyncClient(base_url=dp.url) as http:
        missing = await http.post("/api/pull", json={})
        assert missing.status_code == 400 and missing.json() == {"error": "model is required"}
        assert (await http.get("/api/pull")).status_code == 405


async def test_blobs_create_and_push_go_to_the_first_healthy_ollama_backend(
    dp: RunningDataPlane, writer: SnapshotWriter, backend_urls: list[str], tmp_path: Path
) -> None:
    backends = [
        BackendView(id="down", base_url=backend_urls[0], healthy=False),
        BackendView(id="openai", base_url=backend_urls[1], api_format="OpenAI"),
        BackendView(id="chosen", base_url=backend_urls[2]),
    ]
    await serve_frontend(writer, dp, backends, **MANAGED)
    client = ollama.AsyncClient(host=dp.url)
    weights = tmp_path / "w.gguf"
    weights.write_bytes(b"GGUF" + bytes(range(256)) * 512)
    digest = await client.create_blob(weights)
    assert digest == "sha256:" + hashlib.sha256(weights.read_bytes()).hexdigest()
    async with httpx.AsyncClient() as http:
        held = [(await http.head(f"{url}/api/blobs/{digest}")).status_code for url in backend_urls]
        assert held == [404, 404, 200]
        here = await http.head(f"{dp.url}/api/blobs/{digest}")
        assert here.status_code == 200 and here.headers["x-ollamaflow-backend"] == "chosen"
        assert (await http.head(f"{dp.url}/api/blobs/sha256:{'0' * 64}")).status_code == 404
        wrong = await http.post(f"{dp.url}/api/blobs/sha256:{'1' * 64}", content=b"x")
        assert wrong.status_code == 400 and "digest mismatch" in wrong.json()["error"]

    # No control plane to refresh the inventory: the create still succeeds (the refresh is best effort).
    parts = [p async for p in await client.create("mine:1b", files={"w.gguf": digest}, stream=True)]
    assert parts[-1].status == "success"
    assert (await client.create("copycat", from_="llama3.2")).status == "success"
    with pytest.raises(ollama.ResponseError) as unknown:
        await client.create("other", files={"w.gguf": "sha256:" + "2" * 64})
    assert unknown.value.status_code == 400
    pushed = [p async for p in await client.push("mine:1b", stream=True)]
    assert pushed[-1].status == "success"
    async with httpx.AsyncClient() as http:
        stats = (await http.get(backend_urls[2] + "/_sim/stats")).json()["by_path"]
        tags = (await http.get(backend_urls[2] + "/api/tags")).json()["models"]
    assert stats["/api/create"] == 3 and stats["/api/push"] == 1
    assert {"mine:1b", "copycat:latest"} <= {m["name"] for m in tags}


async def test_without_an_ollama_backend_authoring_is_refused_in_ollamas_shape(
    dp: RunningDataPlane, writer: SnapshotWriter, backend_urls: list[str]
) -> None:
    vllm = BackendView(id="vllm", base_url=backend_urls[0], api_format="OpenAI")
    await serve_frontend(writer, dp, [vllm], **MANAGED)
    client = ollama.AsyncClient(host=dp.url)
    with pytest.raises(ollama.ResponseError) as refused:
        await client.create("x", from_="llama3.2")
    assert refused.value.status_code == 501
    assert refused.value.error == "/api/create is not supported by OpenAI-compatible backend vllm"

    sick = BackendView(id="sick", base_url=backend_urls[0], healthy=False)
    await serve_frontend(writer, dp, [sick], **MANAGED)
    with pytest.raises(ollama.ResponseError) as unavailable:
        await client.push("llama3.2")
    assert unavailable.value.status_code == 502


async def test_a_blob_over_the_frontends_body_limit_is_refused(
    dp: RunningDataPlane, writer: SnapshotWriter, backend_urls: list[str]
) -> None:
    await serve_frontend(
        writer, dp, [BackendView(id="a", base_url=backend_urls[0])], max_request_body_size=1000, **MANAGED
    )
    data = b"y" * 5000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    async with httpx.AsyncClient() as http:
        declared = await http.post(f"{dp.url}/api/blobs/{digest}", content=data)
        assert declared.status_code == 413 and "limit of 1000 bytes" in declared.json()["error"]

        async def unsized() -> AsyncIterator[bytes]:
            for _ in range(5):
                yield data[:1000]

        streamed = await http.post(f"{dp.url}/api/blobs/{digest}", content=unsized())
        assert streamed.status_code == 413
        assert (await http.head(f"{backend_urls[0]}/api/blobs/{digest}")).status_code == 404


async def test_a_client_that_leaves_a_push_stops_it_on_the_backend(
    dp: RunningDataPlane, writer: SnapshotWriter, backend_urls: list[str]
) -> None:
    await serve_frontend(writer, dp, [BackendView(id="a", base_url=backend_urls[0])], **MANAGED)
    async with httpx.AsyncClient() as http:
        slow = await http.post(backend_urls[0] + "/_sim/config", json={"tokens_per_second": 2})
        assert slow.status_code == 200
        async with http.stream("POST", dp.url + "/api/push", json={"model": "llama3.2"}) as reply:
            assert reply.status_code == 200
            async for line in reply.aiter_lines():
                assert line == '{"status":"retrieving manifest"}'
                break

        async def stats() -> dict:
            return (await http.get(backend_urls[0] + "/_sim/stats")).json()

        deadline = asyncio.get_running_loop().time() + 30
        while (await stats())["disconnects"] != 1:
            assert asyncio.get_running_loop().time() < deadline, "the backend's push went on"
            await asyncio.sleep(0.05)
