"""The model-listing routes through a running data plane, over real HTTP to simulated backends, read
with the official clients: /api/tags, /api/ps, /api/show, /v1/models and /v1/models/{id}."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import httpx
import ollama
import openai
import pytest

from dataplane.models.listing import OLLAMA_NAMES
from dataplane.models.merge import find_entry, listed_entries, merge_unique, sort_by_expiry
from ollamaflow.sim import running_sim
from shared.errors import UpstreamProtocolError
from shared.snapshot import BackendView, FrontendView, SnapshotContent
from tests.dataplane.harness import RunningDataPlane, SnapshotWriter


async def _serve(
    writer: SnapshotWriter, dp: RunningDataPlane, backends: list[BackendView], hostname: str = "*"
) -> None:
    frontend = FrontendView(id="f", hostname=hostname, backends=tuple(b.id for b in backends))
    revision = dp.app.state.revision + 1
    await writer.publish(SnapshotContent(frontends=(frontend,), backends=tuple(backends)), revision)
    await dp.wait_revision(revision)


def _closed_port_url() -> str:
    """A loopback URL where nothing listens (the port was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@contextlib.asynccontextmanager
async def _silent_backend() -> AsyncIterator[str]:
    """A backend that accepts connections and reads requests but never answers."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


async def test_tags_merge_every_healthy_backend_each_model_once(
    dp: RunningDataPlane, writer: SnapshotWriter
) -> None:
    async with (
        running_sim(models=("llama3.2:latest", "qwen2.5:0.5b")) as a,
        running_sim(models=("LLaMA3.2", "all-minilm:latest")) as b,
        running_sim(format="openai", models=("meta-llama/Llama-3.1-8B",)) as c,
        running_sim(models=("phi3:mini",)) as sick,
    ):
        await _serve(
            writer,
            dp,
            [
                BackendView(id="a", base_url=a),
                BackendView(id="b", base_url=b),
                BackendView(id="c", base_url=c, api_format="OpenAI"),
                BackendView(id="dead", base_url=_closed_port_url()),
                BackendView(id="sick", base_url=sick, healthy=False),
                BackendView(id="off", base_url=sick, active=False),
            ],
        )
        listed = await ollama.AsyncClient(host=dp.url).list()
        names = [m.model for m in listed.models]
        assert sorted(names) == sorted(
            ["llama3.2:latest", "qwen2.5:0.5b", "all-minilm:latest", "meta-llama/Llama-3.1-8B"]
        )
        # The first backend's entry wins: b's "LLaMA3.2" is the same model as a's "llama3.2:latest".
        first = next(m for m in listed.models if m.model == "llama3.2:latest")
        assert first.size and first.digest and first.details and first.details.family
        openai_entry = next(m for m in listed.models if m.model == "meta-llama/Llama-3.1-8B")
        assert openai_entry.size == 0 and len(openai_entry.digest or "") == 64

        async with httpx.AsyncClient(base_url=dp.url) as client:
            got = await client.get("/api/tags")
            head = await client.head("/api/tags")
        assert got.status_code == 200 and got.headers["x-ollamaflow-request"]
        assert {m["name"] for m in got.json()["models"]} == set(names)
        assert head.status_code == 200 and head.content == b""


async def test_a_silent_backend_is_left_out_after_the_timeout(
    dp: RunningDataPlane, writer: SnapshotWriter
) -> None:
    async with running_sim(models=("llama3.2:latest",)) as sim, _silent_backend() as silent:
        await _serve(
            writer, dp, [BackendView(id="silent", base_url=silent), BackendView(id="sim", base_url=sim)]
        )
        listed = await ollama.AsyncClient(host=dp.url).list()
        assert [m.model for m in listed.models] == ["llama3.2:latest"]


async def test_empty_lists_and_unmatched_hosts(dp: RunningDataPlane, writer: SnapshotWriter) -> None:
    await _serve(writer, dp, [BackendView(id="dead", base_url=_closed_port_url())])
    async with httpx.AsyncClient(base_url=dp.url) as client:
        assert (await client.get("/api/tags")).json() == {"models": []}
        assert (await client.get("/api/ps")).json() == {"models": []}
        assert (await client.get("/v1/models")).json() == {"object": "list", "data": []}
        assert (await client.get("/v1/models/")).json() == {"object": "list", "data": []}
        wrong_method = await client.post("/v1/models", json={})
        assert wrong_method.status_code == 405 and wrong_method.json()["error"]["message"]

    await _serve(writer, dp, [], hostname="models.example")
    async with httpx.AsyncClient(base_url=dp.url) as client:
        tags = await client.get("/api/tags")
        assert tags.status_code == 404 and "no frontend" in tags.json()["error"]
        assert tags.headers["x-ollamaflow-request"]
        models = await client.get("/v1/models")
        assert models.status_code == 404 and "no frontend" in models.json()["error"]["message"]
        show = await client.post("/api/show", json={"model": "llama3.2"})
        assert show.status_code == 404 and "no frontend" in show.json()["error"]
        matched = await client.get("/api/tags", headers={"Host": "models.example:8080"})
        assert matched.json() == {"models": []}


async def test_openai_clients_list_and_retrieve_models(dp: RunningDataPlane, writer: SnapshotWriter) -> None:
    async with (
        running_sim(models=("llama3.2:latest", "acme/coder:7b")) as a,
        running_sim(format="openai", models=("meta-llama/Llama-3.1-8B", "llama3.2:latest")) as c,
    ):
        await _serve(
            writer,
            dp,
            [
                BackendView(id="a", base_url=a),
                BackendView(id="c", base_url=c, api_format="OpenAI"),
                BackendView(id="dead", base_url=_closed_port_url(), api_format="OpenAI"),
            ],
        )
        client = openai.AsyncOpenAI(base_url=dp.url + "/v1", api_key="x", max_retries=0)
        listed = [m async for m in client.models.list()]
        assert sorted(m.id for m in listed) == ["acme/coder:7b", "llama3.2:latest", "meta-llama/Llama-3.1-8B"]
        coder = next(m for m in listed if m.id == "acme/coder:7b")
        assert coder.object == "model" and coder.owned_by == "acme" and coder.created > 0

        llama = await client.models.retrieve("llama3.2:latest")
        assert llama.id == "llama3.2:latest" and llama.owned_by == "library"
        assert (await client.models.retrieve("LLaMA3.2")).id == "llama3.2:latest"
        assert (await client.models.retrieve("acme/coder:7b")).owned_by == "acme"
        assert (await client.models.retrieve("meta-llama/Llama-3.1-8B")).id == "meta-llama/Llama-3.1-8B"
        with pytest.raises(openai.NotFoundError) as caught:
            await client.models.retrieve("no-such-model")
        assert caught.value.code == "model_not_found"
        assert "no-such-model" in caught.value.message
        await client.close()

        async with httpx.AsyncClient(base_url=dp.url) as raw:
            encoded = await raw.get("/v1/models/acme%2Fcoder%3A7b")
        assert encoded.status_code == 200 and encoded.json()["id"] == "acme/coder:7b"


async def test_ps_lists_loaded_models_of_ollama_backends_longest_first(
    dp: RunningDataPlane, writer: SnapshotWriter
) -> None:
    async with (
        running_sim(models=("llama3.2:latest", "qwen2.5:0.5b")) as a,
        running_sim(models=("all-minilm:latest",)) as b,
        running_sim(format="openai", models=("gpt-x",)) as c,
    ):
        await ollama.AsyncClient(host=a).generate(model="llama3.2", prompt="hi", keep_alive="10m")
        await ollama.AsyncClient(host=a).generate(model="qwen2.5:0.5b", prompt="hi", keep_alive="3h")
        await ollama.AsyncClient(host=b).embed(model="all-minilm", input="hi", keep_alive="1h")
        await _serve(
            writer,
            dp,
            [
                BackendView(id="a", base_url=a),
                BackendView(id="b", base_url=b),
                BackendView(id="c", base_url=c, api_format="OpenAI"),
            ],
        )
        running = await ollama.AsyncClient(host=dp.url).ps()
        assert [m.model for m in running.models] == ["qwen2.5:0.5b", "all-minilm:latest", "llama3.2:latest"]
        assert all(m.expires_at and m.size_vram for m in running.models)


async def test_show_asks_a_backend_that_has_the_model(dp: RunningDataPlane, writer: SnapshotWriter) -> None:
    async with (
        running_sim(models=("qwen2.5:0.5b",)) as a,
        running_sim(models=("llama3.2:latest",)) as b,
        running_sim(format="openai", models=("meta-llama/Llama-3.1-8B", "text-embed-small")) as c,
    ):
        await _serve(
            writer,
            dp,
            [
                BackendView(id="a", base_url=a, models=("qwen2.5:0.5b",), models_known=True),
                BackendView(id="b", base_url=b, models=("llama3.2:latest",), models_known=True),
                BackendView(
                    id="c",
                    base_url=c,
                    api_format="OpenAI",
                    models=("meta-llama/Llama-3.1-8B", "text-embed-small"),
                    models_known=True,
                ),
            ],
        )
        client = ollama.AsyncClient(host=dp.url)
        shown = await client.show("llama3.2")
        assert shown.details and shown.details.family and shown.modelinfo and shown.template
        assert "completion" in (shown.capabilities or [])
        synthesised = await client.show("meta-llama/Llama-3.1-8B")
        assert synthesised.capabilities == ["completion"] and synthesised.modelinfo == {}
        assert (await client.show("text-embed-small")).capabilities == ["embedding"]
        with pytest.raises(ollama.ResponseError) as caught:
            await client.show("no-such-model")
        assert caught.value.status_code == 404 and caught.value.error == "model 'no-such-model' not found"

        async with httpx.AsyncClient(base_url=dp.url) as raw:
            legacy = await raw.post("/api/show", json={"name": "LLaMA3.2:latest"})
            assert legacy.status_code == 200 and legacy.headers["x-ollamaflow-backend"] == "b"
            assert legacy.headers["x-ollamaflow-request"]
            empty = await raw.post("/api/show", content=b"")
            assert empty.status_code == 400 and empty.json() == {"error": "missing request body"}
            nameless = await raw.post("/api/show", json={})
            assert nameless.status_code == 400 and nameless.json() == {"error": "model is required"}
            broken = await raw.post("/api/show", content=b"{")
            assert broken.status_code == 400 and broken.json()["error"]


async def test_show_without_a_known_inventory_asks_the_backends(
    dp: RunningDataPlane, writer: SnapshotWriter
) -> None:
    async with running_sim(models=("qwen2.5:0.5b",)) as a, running_sim(models=("llama3.2:latest",)) as b:
        await _serve(writer, dp, [BackendView(id="a", base_url=a), BackendView(id="b", base_url=b)])
        async with httpx.AsyncClient(base_url=dp.url) as raw:
            shown = await raw.post("/api/show", json={"model": "llama3.2"})
            assert shown.status_code == 200 and shown.headers["x-ollamaflow-backend"] == "b"
            missing = await raw.post("/api/show", json={"model": "nope"})
            assert missing.status_code == 404 and missing.json() == {"error": "model 'nope' not found"}

        await _serve(writer, dp, [BackendView(id="dead", base_url=_closed_port_url())])
        with pytest.raises(ollama.ResponseError) as caught:
            await ollama.AsyncClient(host=dp.url).show("llama3.2")
        assert caught.value.status_code == 502


# The merge core on its own (pure).


def test_entries_are_read_leniently_but_a_broken_list_is_the_backends_fault() -> None:
    assert listed_entries(b'{"object": "list", "data": null}', key="data", name_fields=("id",)) == []
    body = b'{"models": [{"name": "a"}, {"size": 1}, "x", {"model": "", "name": "b:1b"}]}'
    assert listed_entries(body, key="models", name_fields=OLLAMA_NAMES) == [
        {"name": "a"},
        {"model": "", "name": "b:1b"},
    ]
    for broken in (b"<html>", b"[]", b'{"models": {}}'):
        with pytest.raises(UpstreamProtocolError):
            listed_entries(broken, key="models", name_fields=OLLAMA_NAMES)


def test_merge_keeps_the_first_entry_of_each_model() -> None:
    first = [{"model": "llama3.2:latest", "size": 1}, {"model": "acme/coder:7b"}]
    second = [{"name": "registry.ollama.ai/library/LLAMA3.2", "size": 2}, {"model": "qwen2.5:0.5b"}]
    merged = merge_unique([first, second], OLLAMA_NAMES)
    assert merged == [*first, {"model": "qwen2.5:0.5b"}]
    assert find_entry(merged, "llama3.2", OLLAMA_NAMES) == first[0]
    assert find_entry(merged, "llama3.2:1b", OLLAMA_NAMES) is None


def test_loaded_models_sort_by_expiry_across_time_zones() -> None:
    entries = [
        {"name": "a", "expires_at": "2025-01-01T10:00:00.123456789Z"},
        {"name": "b", "expires_at": "2025-01-01T03:30:00-07:00"},  # 10:30 UTC
        {"name": "c"},
        {"name": "d", "expires_at": "soon"},
        {"name": "e", "expires_at": "2025-01-01T11:00:00+02:00"},  # 09:00 UTC
    ]
    assert [e["name"] for e in sort_by_expiry(entries)][:3] == ["b", "a", "e"]
