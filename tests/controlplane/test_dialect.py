"""A backend's dialect: read from /v1/models (pure), and published for a vLLM-like simulator."""

from __future__ import annotations

import httpx
import pytest

from controlplane.health.inventory import parse_openai_listing
from controlplane.publish.builder import BackendRuntime, backend_view
from controlplane.settings import Settings
from controlplane.tables import BackendRow
from ollamaflow.sim import running_sim
from shared.snapshot import Snapshot
from tests.controlplane.harness import watch_snapshots
from tests.controlplane.monitoring_support import backend, port_of

VLLM_MODELS = (
    b'{"object":"list","data":[{"id":"Qwen/Qwen3-8B","object":"model","created":1,"owned_by":"vllm",'
    b'"root":"Qwen/Qwen3-8B","parent":null,"max_model_len":40960,"permission":[]}]}'
)


def test_vllm_is_recognised_by_owned_by() -> None:
    assert parse_openai_listing(VLLM_MODELS) == (("Qwen/Qwen3-8B",), "vllm")


@pytest.mark.parametrize(
    "body",
    [
        b'{"object":"list","data":[{"id":"gpt-4o","object":"model","created":1,"owned_by":"system"}]}',
        b'{"object":"list","data":[{"id":"llama3.2:latest","object":"model","owned_by":"library"}]}',
        b'{"object":"list","data":[{"id":"m"}]}',
        b'{"object":"list","data":[]}',
    ],
)
def test_other_servers_are_plain(body: bytes) -> None:
    assert parse_openai_listing(body)[1] == ""


def test_unexpected_listing_is_an_error() -> None:
    with pytest.raises(ValueError, match="/v1/models"):
        parse_openai_listing(b'{"data":[{"owned_by":"vllm"}]}')


def test_builder_publishes_the_dialect_of_openai_backends_only() -> None:
    runtime = BackendRuntime(models=("m",), models_known=True, dialect="vllm")
    openai_row = BackendRow(identifier="v", hostname="h", port=8000, api_format="OpenAI")
    ollama_row = BackendRow(identifier="o", hostname="h", port=11434, api_format="Ollama")
    assert backend_view(openai_row, runtime).dialect == "vllm"
    assert backend_view(openai_row).dialect == ""
    assert backend_view(ollama_row, runtime).dialect == ""


async def test_a_vllm_simulator_is_published_as_vllm(
    probing_admin: httpx.AsyncClient, monitoring: Settings
) -> None:
    async with (
        running_sim(format="openai", dialect="vllm", models=("served-model",)) as vllm,
        running_sim(format="openai", models=("plain-model",)) as plain,
        watch_snapshots(monitoring.nats_url, monitoring.bus_namespace) as watch,
    ):
        for ident, url in (("vllm", vllm), ("plain", plain)):
            body = {
                "Identifier": ident,
                "Hostname": "127.0.0.1",
                "Port": port_of(url),
                "ApiFormat": "OpenAI",
                "HealthCheckUrl": "/v1/models",
            }
            resp = await probing_admin.put("/v1.0/backends", json=body)
            assert resp.status_code == 201, resp.text

        def read(s: Snapshot) -> bool:
            views = backend(s, "vllm"), backend(s, "plain")
            return all(view is not None and view.models_known for view in views)

        snapshot = await watch.next(read)
        vllm_view, plain_view = backend(snapshot, "vllm"), backend(snapshot, "plain")
        assert vllm_view is not None and plain_view is not None
        assert (vllm_view.models, vllm_view.dialect) == (("served-model",), "vllm")
        assert (plain_view.models, plain_view.dialect) == (("plain-model",), "")

        health = {b["Identifier"]: b for b in (await probing_admin.get("/v1.0/backends/health")).json()}
        assert (health["vllm"]["Dialect"], health["plain"]["Dialect"]) == ("vllm", "")
