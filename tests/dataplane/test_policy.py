"""Request policy over real HTTP, in both API formats: pinned properties reach the backend merged into
the body it receives, X-OllamaFlow-Label narrows the backends, allow flags, the size limit, and the
headers that go upstream and come back.

The backends are ``recorder``s: they show the exact request the data plane made.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import openai
import pytest

from shared.snapshot import ApiFormat, BackendView, FrontendView, SnapshotContent
from tests.dataplane.harness import RunningDataPlane, SnapshotWriter
from tests.dataplane.recorder import Recorder, recorder

OLLAMA_PINS = {"options": {"num_ctx": 8192}, "keep_alive": "10m"}
OPENAI_PINS = {"max_tokens": 64, "stream_options": {"include_usage": True}}
CHAT = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def recs() -> AsyncIterator[tuple[Recorder, Recorder]]:
    async with recorder() as one, recorder() as two:
        yield one, two


async def _publish(
    writer: SnapshotWriter, dp: RunningDataPlane, *views: BackendView, **frontend: object
) -> None:
    front = FrontendView(id="f", hostname="*", backends=tuple(v.id for v in views), **frontend)  # type: ignore[arg-type]
    revision = dp.app.state.revision + 1
    await writer.publish(SnapshotContent(frontends=(front,), backends=views), revision)
    await dp.wait_revision(revision)


def _openai(dp: RunningDataPlane) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=dp.url + "/v1", api_key="unused", max_retries=0)


@pytest.mark.parametrize("client_format", ["Ollama", "OpenAI"])
async def test_ollama_backend_gets_pins_merged_into_its_own_body(
    recs: tuple[Recorder, Recorder], dp: RunningDataPlane, writer: SnapshotWriter, client_format: ApiFormat
) -> None:
    rec = recs[0]
    backend = BackendView(
        id="rec",
        base_url=rec.url,
        pinned_completions_properties={"options": {"num_ctx": 8192}},
        pinned_embeddings_properties={"truncate": False},
    )
    await _publish(
        writer,
        dp,
        backend,
        pinned_completions_properties={"options": {"num_ctx": 2048, "seed": 7}, "keep_alive": "10m"},
    )
    async with httpx.AsyncClient(base_url=dp.url) as client:
        if client_format == "Ollama":
            await client.post(
                "/api/chat",
                json={"model": "echo", "messages": CHAT, "stream": False, "options": {"temperature": 0.5}},
            )
            await client.post("/api/embed", json={"model": "echo", "input": "x", "truncate": True})
        else:
            await client.post(
                "/v1/chat/completions", json={"model": "echo", "messages": CHAT, "temperature": 0.5}
            )
            await client.post("/v1/embeddings", json={"model": "echo", "input": "x"})
    chat, embed = (json.loads(seen.body) for seen in rec.seen)
    # Client < frontend < backend; objects merge, so the client's temperature stays.
    pinned = {k: chat["options"].get(k) for k in ("temperature", "num_ctx", "seed")}
    assert pinned == {"temperature": 0.5, "num_ctx": 8192, "seed": 7}
    assert chat["keep_alive"] == "10m"
    assert chat["messages"] == CHAT and chat["model"] == "echo"
    assert embed["truncate"] is False
    assert "options" not in embed and "keep_alive" not in embed  # completions pins stay off embeddings
    if client_format == "Ollama":
        assert chat == {
            "model": "echo",
            "messages": CHAT,
            "stream": False,
            "options": {"temperature": 0.5, "num_ctx": 8192, "seed": 7},
            "keep_alive": "10m",
        }


@pytest.mark.parametrize("client_format", ["Ollama", "OpenAI"])
async def test_openai_backend_gets_pins_as_written_in_its_format(
    recs: tuple[Recorder, Recorder], dp: RunningDataPlane, writer: SnapshotWriter, client_format: ApiFormat
) -> None:
    rec = recs[0]
    backend = BackendView(
        id="rec",
        base_url=rec.url,
        api_format="OpenAI",
        pinned_completions_properties=OPENAI_PINS,
        pinned_embeddings_properties={"dimensions": 8},
    )
    await _publish(writer, dp, backend)
    async with httpx.AsyncClient(base_url=dp.url) as client:
        if client_format == "Ollama":
            await client.post("/api/chat", json={"model": "echo", "messages": CHAT, "stream": False})
            await client.post("/api/embed", json={"model": "echo", "input": "x"})
        else:
            await client.post(
                "/v1/chat/completions", json={"model": "echo", "messages": CHAT, "max_tokens": 1000}
            )
            await client.post("/v1/embeddings", json={"model": "echo", "input": "x"})
    chat, embed = (json.loads(seen.body) for seen in rec.seen)
    assert rec.seen[0].query == "" and "dimensions" not in chat
    assert chat["max_tokens"] == 64 and chat["stream_options"] == {"include_usage": True}
    assert chat["messages"][-1]["content"] == "hi"
    assert embed["dimensions"] == 8 and "max_tokens" not in embed
    if client_format == "OpenAI":
        assert chat == {"model": "echo", "messages": CHAT, **OPENAI_PINS}


@pytest.mark.parametrize("path", ["/api/chat", "/v1/chat/completions"])
async def test_a_model_pinned_by_the_frontend_decides_the_route(
    recs: tuple[Recorder, Recorder], dp: RunningDataPlane, writer: SnapshotWriter, path: str
) -> None:
    has_echo, has_other = recs
    await _publish(
        writer,
        dp,
        BackendView(id="other", base_url=has_other.url, models=("other",), models_known=True),
        BackendView(id="echo", base_url=has_echo.url, models=("echo",), models_known=True),
        pinned_completions_properties={"model": "echo"},
    )
    async with httpx.AsyncClient(base_url=dp.url) as client:
        for _ in range(3):
            await client.post(path, json={"model": "other", "messages": CHAT, "stream": False})
    assert has_other.seen == [] and len(has_echo.seen) == 3
    assert {json.loads(seen.body)["model"] for seen in has_echo.seen} == {"echo"}


async def test_a_request_without_pins_passes_byte_for_byte(
    recs: tuple[Recorder, Recorder], dp: RunningDataPlane, writer: SnapshotWriter
) -> None:
    rec = recs[0]
    # Embeddings pins only: a chat request has none and must not be re-encoded.
    await _publish(writer, dp, BackendView(id="rec", base_url=rec.url, pinned_embeddings_properties={"x": 1}))
    body = b'{"model":"echo",   "messages":[],\n"options":{"temperature":0.50}}'
    async with httpx.AsyncClient() as client:
        resp = await client.post(dp.url + "/api/chat", content=body)
    assert resp.status_code == 200
    assert rec.seen[-1].body == body


async def test_the_label_header_picks_backends_with_that_exact_label(
    recs: tuple[Recorder, Recorder], dp: RunningDataPlane, writer: SnapshotWriter
) -> None:
    gpu, other = recs
    await _publish(
        writer,
        dp,
        BackendView(id="gpu", base_url=gpu.url, labels=("GPU",)),
        BackendView(id="other", base_url=other.url, labels=("gpu-small",)),
        BackendView(id="down", base_url=other.url, labels=("cpu",), healthy=False),
    )
    async with httpx.AsyncClient(base_url=dp.url) as client:
        labelled = [
            await client.post("/api/chat", json={"model": "echo"}, headers={"X-OllamaFlow-Label": "gpu"})
            for _ in range(4)
        ]
        unlabelled = [await client.post("/api/chat", json={"model": "echo"}) for _ in range(4)]
        missing = await client.post("/api/chat", json={"model": "echo"}, headers={"X-OllamaFlow-Label": "gp"})
    assert {r.headers["x-ollamaflow-backend"] for r in labelled} == {"gpu"}
    assert {r.headers["x-ollamaflow-backend"] for r in unlabelled} == {"gpu", "other"}
    assert "X-OllamaFlow-Label" not in gpu.seen[0].headers  # meant for the data plane only
    # A label no backend of the frontend carries is the client's mistake...
    assert missing.status_code == 400
    assert missing.json() == {"error": "no backend of this frontend carries label 'gp' (X-OllamaFlow-Label)"}
    with pytest.raises(openai.BadRequestError) as unknown:
        await _openai(dp).chat.completions.create(
            model="echo",
            messages=CHAT,
            extra_headers={"X-OllamaFlow-Label": "tpu"},  # type: ignore[arg-type]
        )
    assert "carries label 'tpu'" in unknown.value.body["message"]  # type: ignore[index]
    # ... one whose backends cannot serve now (here: unhealthy) is a wait.
    async with httpx.AsyncClient(base_url=dp.url) as client:
        down = await client.post("/api/chat", json={"model": "echo"}, headers={"X-OllamaFlow-Label": "CPU"})
    assert (down.status_code, down.headers["retry-after"]) == (503, "5")
    assert "no backend with label 'CPU'" in down.json()["error"]
    with pytest.raises(openai.APIStatusError) as caught:
        await _openai(dp).chat.completions.create(
            model="echo",
            messages=CHAT,
            extra_headers={"X-OllamaFlow-Label": "cpu"},  # type: ignore[arg-type]
        )
    assert caught.value.status_code == 503
    assert caught.value.body["code"] == "label_unavailable"  # type: ignore[index]
    assert len(gpu.seen) + len(other.seen) == 8


async def test_openai_clients_get_refusals_in_their_own_shape(
    recs: tuple[Recorder, Recorder], dp: RunningDataPlane, writer: SnapshotWriter
) -> None:
    rec = recs[0]
    await _publish(
        writer, dp, BackendView(id="rec", base_url=rec.url), allow_embeddings=False, max_request_body_size=200
    )
    client = _openai(dp)
    with pytest.raises(openai.PermissionDeniedError) as forbidden:
        await client.embeddings.create(model="echo", input="x")
    assert "embeddings requests are not permitted" in forbidden.value.body["message"]  # type: ignore[index]
    with pytest.raises(openai.APIStatusError) as too_big:
        await client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "x" * 300}])
    assert too_big.value.status_code == 413
    assert "200 bytes" in too_big.value.body["message"]  # type: ignore[index]
    assert rec.seen == []


async def test_backends_that_forbid_a_kind_are_skipped(
    recs: tuple[Recorder, Recorder], dp: RunningDataPlane, writer: SnapshotWriter
) -> None:
    chat_only, both = recs
    await _publish(
        writer,
        dp,
        BackendView(id="chat-only", base_url=chat_only.url, allow_embeddings=False),
        BackendView(id="both", base_url=both.url),
    )
    async with httpx.AsyncClient(base_url=dp.url) as client:
        embeds = [await client.post("/api/embed", json={"model": "echo", "input": "x"}) for _ in range(3)]
        for _ in range(3):  # the recorder's reply is no embedding: only what went upstream counts here
            await client.post("/v1/embeddings", json={"model": "echo", "input": "x"})
    assert {r.headers["x-ollamaflow-backend"] for r in embeds} == {"both"}
    assert chat_only.seen == [] and len(both.seen) == 6


async def test_openai_requests_carry_host_forwarding_and_request_id(
    recs: tuple[Recorder, Recorder], dp: RunningDataPlane, writer: SnapshotWriter
) -> None:
    rec = recs[0]
    await _publish(writer, dp, BackendView(id="rec", base_url=rec.url, api_format="OpenAI"))
    async with httpx.AsyncClient() as client:
        resp = await client.post(
            dp.url + "/v1/chat/completions",
            json={"model": "echo", "messages": CHAT},
            headers={"Host": "lb.example.com", "X-Forwarded-For": "198.51.100.7"},
        )
    seen = rec.seen[-1]
    assert resp.status_code == 200
    assert seen.headers["Host"] == rec.url.removeprefix("http://")
    assert seen.headers["X-Forwarded-For"] == "198.51.100.7, 127.0.0.1"
    assert len(resp.headers["x-ollamaflow-request"]) == 32
    assert seen.headers["X-OllamaFlow-Request"] == resp.headers["x-ollamaflow-request"]
    assert resp.headers["x-ollamaflow-backend"] == "rec"
