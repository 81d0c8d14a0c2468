"""Model-aware routing over real HTTP: simulators with different models behind one frontend."""

from __future__ import annotations

import httpx
import ollama
import pytest

from ollamaflow.sim import SimConfig, running_sim
from shared.snapshot import BackendView
from tests.dataplane.harness import RunningDataPlane, SnapshotWriter, serve_frontend

MESSAGES = [{"role": "user", "content": "hi"}]


async def test_each_model_goes_to_a_backend_that_has_it(dp: RunningDataPlane, writer: SnapshotWriter) -> None:
    async with (
        running_sim(SimConfig(models=("llama3:latest",))) as llama,
        running_sim(SimConfig(models=("qwen2.5:0.5b",))) as qwen,
    ):
        await serve_frontend(
            writer,
            dp,
            [
                BackendView(id="llama", base_url=llama, models=("llama3:latest",), models_known=True),
                BackendView(id="qwen", base_url=qwen, models=("qwen2.5:0.5b",), models_known=True),
            ],
        )
        async with httpx.AsyncClient(base_url=dp.url) as client:
            for _ in range(4):  # round-robin would send every other one to the wrong backend
                for model, backend in (("llama3", "llama"), ("qwen2.5:0.5b", "qwen")):
                    body = {"model": model, "messages": MESSAGES, "stream": False}
                    answer = await client.post("/api/chat", json=body)
                    assert answer.status_code == 200, answer.text
                    assert answer.headers["x-ollamaflow-backend"] == backend
            missing = await client.post("/api/chat", json={"model": "mistral", "messages": MESSAGES})
            assert missing.status_code == 404
            assert missing.json() == {"error": "model 'mistral' not found"}
        with pytest.raises(ollama.ResponseError) as caught:  # the CLI pulls when it sees exactly this
            await ollama.AsyncClient(host=dp.url).chat(model="mistral", messages=MESSAGES)
        assert caught.value.status_code == 404


async def test_a_required_model_not_yet_pulled_is_a_503_with_retry_after(
    dp: RunningDataPlane, writer: SnapshotWriter
) -> None:
    async with running_sim(SimConfig(models=("llama3:latest",))) as sim:
        backend = BackendView(id="sim", base_url=sim, models=("llama3:latest",), models_known=True)
        await serve_frontend(writer, dp, [backend], required_models=("phi3:mini",))
        async with httpx.AsyncClient(base_url=dp.url) as client:
            answer = await client.post("/api/generate", json={"model": "phi3:mini", "prompt": "x"})
            assert answer.status_code == 503
            assert int(answer.headers["retry-after"]) > 0
            assert "being pulled" in answer.json()["error"]


async def test_a_backend_whose_inventory_is_unknown_gets_every_model(
    dp: RunningDataPlane, writer: SnapshotWriter
) -> None:
    async with running_sim(SimConfig(models=("llama3:latest",))) as sim:
        await serve_frontend(writer, dp, [BackendView(id="sim", base_url=sim)])  # models_known False
        async with httpx.AsyncClient(base_url=dp.url) as client:
            answer = await client.post(
                "/api/chat", json={"model": "llama3", "messages": MESSAGES, "stream": False}
            )
            assert answer.status_code == 200
            # the backend itself answers for a model it lacks
            missing = await client.post("/api/chat", json={"model": "nope", "messages": MESSAGES})
            assert missing.status_code == 404
            assert missing.headers["x-ollamaflow-backend"] == "sim"
