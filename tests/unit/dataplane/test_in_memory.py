"""A whole data plane with no socket: the in-memory bus carries its snapshot, simulators are called
in-process as its backends (tests.support.asgi_upstream), and the official clients reach it through
httpx's ASGI transport. Routing, translation and failover run as in production; only the wire is
left out, so these run in a fraction of a second each."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import ollama
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dataplane.app import DataPlane
from dataplane.settings import DataPlaneSettings
from ollamaflow.sim import SimConfig, create_app
from shared.memory_bus import MemoryBroker, MemoryBus
from shared.snapshot import FrontendView, SnapshotContent
from tests.dataplane.harness import SnapshotWriter, content, eventually
from tests.support.asgi_upstream import AsgiUpstream
from tests.support.secrets import TEST_KEYRING
from tests.support.signing import SnapshotKeys

BACKENDS = {"a": "http://sim-a:11434", "b": "http://sim-b:11434", "v": "http://sim-v:8000"}


@dataclass
class InMemory:
    dp: DataPlane
    writer: SnapshotWriter
    http: httpx.AsyncClient

    async def publish(self, backends: dict[str, str], revision: int, **options: object) -> None:
        await self.writer.publish(content(backends, **options), revision)
        await eventually(lambda: self.dp.state.revision == revision, 5, f"revision {revision} applied")


@pytest.fixture
async def memory(snapshot_keys: SnapshotKeys) -> AsyncIterator[InMemory]:
    broker = MemoryBroker()
    # Bound "everywhere" as far as they know: an Ollama on loopback refuses other Host names, as
    # the real one does against DNS rebinding.
    apps = {
        ("sim-a", 11434): create_app(SimConfig(host="0.0.0.0")),
        ("sim-b", 11434): create_app(SimConfig(host="0.0.0.0")),
        ("sim-v", 8000): create_app(SimConfig(host="0.0.0.0", format="openai")),
    }
    settings = DataPlaneSettings(
        snapshot_public_key_files=(snapshot_keys.public,),
        dataplane_id="dp-" + uuid.uuid4().hex[:8],
        report_interval=0.2,
        snapshot_poll_interval=0.5,
        secrets=TEST_KEYRING,
        access_log=False,
    )
    dp = DataPlane(settings, bus=MemoryBus(broker), upstream=AsgiUpstream(apps))  # type: ignore[arg-type]
    writer_bus = MemoryBus(broker)
    await writer_bus.connect()
    await dp.startup()
    transport = httpx.ASGITransport(app=dp)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://dp") as http:
        yield InMemory(dp, SnapshotWriter(writer_bus), http)  # type: ignore[arg-type]
    await dp.shutdown()
    await writer_bus.close()


async def test_an_ollama_client_is_spread_over_the_frontend_s_backends(memory: InMemory) -> None:
    await memory.publish({"a": BACKENDS["a"], "b": BACKENDS["b"]}, 1)
    client = ollama.AsyncClient(host="http://dp", transport=memory.http._transport)
    served = set()
    for _ in range(4):
        reply = await client.chat(model="llama3.2", messages=[{"role": "user", "content": "hi"}])
        assert reply.message.content and reply.done
    for _ in range(4):
        answer = await memory.http.post(
            "/api/generate", json={"model": "llama3.2", "prompt": "x", "stream": False}
        )
        served.add(answer.headers["x-ollamaflow-backend"])
    assert served == {"a", "b"}


async def test_an_openai_client_streams_from_an_ollama_backend_translated(memory: InMemory) -> None:
    await memory.publish({"a": BACKENDS["a"]}, 1)
    client = openai.AsyncOpenAI(base_url="http://dp/v1", api_key="none", http_client=memory.http)
    stream = await client.chat.completions.create(
        model="llama3.2", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    pieces = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
    assert len(pieces) > 2 and "".join(pieces).strip()


async def test_an_ollama_client_streams_from_an_openai_backend_translated(memory: InMemory) -> None:
    await memory.publish({"v": BACKENDS["v"]}, 1, api_format="OpenAI")
    client = ollama.AsyncClient(host="http://dp", transport=memory.http._transport)
    lines = [part async for part in await client.generate(model="llama3.2:latest", prompt="hi", stream=True)]
    assert lines[-1].done and sum(1 for line in lines if line.response) > 2


async def test_a_backend_that_cannot_be_reached_costs_no_request(memory: InMemory) -> None:
    # "gone" has no app behind it: every request that picks it first is tried on "a" instead.
    await memory.publish({"gone": "http://sim-gone:11434", "a": BACKENDS["a"]}, 1)
    for _ in range(6):
        answer = await memory.http.post(
            "/api/generate", json={"model": "llama3.2", "prompt": "x", "stream": False}
        )
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-ollamaflow-backend"] == "a"


async def test_a_model_no_backend_has_is_a_404_in_each_client_s_format(memory: InMemory) -> None:
    await memory.publish({"a": BACKENDS["a"]}, 1)
    client = ollama.AsyncClient(host="http://dp", transport=memory.http._transport)
    with pytest.raises(ollama.ResponseError) as ollama_error:
        await client.chat(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert ollama_error.value.status_code == 404 and "no-such-model" in ollama_error.value.error
    openai_client = openai.AsyncOpenAI(base_url="http://dp/v1", api_key="none", http_client=memory.http)
    with pytest.raises(openai.NotFoundError) as openai_error:
        await openai_client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}]
        )
    assert "no-such-model" in str(openai_error.value)


async def test_frontends_are_told_apart_by_host_and_their_pins_reach_the_backend(memory: InMemory) -> None:
    frontends = [
        FrontendView(
            id="short",
            hostname="short.test",
            backends=("a",),
            pinned_completions_properties={"options": {"num_predict": 3}},
        ),
        FrontendView(id="plain", hostname="*", backends=("b",)),
    ]
    await memory.writer.publish(content({"a": BACKENDS["a"], "b": BACKENDS["b"]}, frontends), 1)
    await eventually(lambda: memory.dp.state.revision == 1, 5, "revision 1 applied")
    body = {"model": "llama3.2", "prompt": "x", "stream": False}
    pinned = await memory.http.post("/api/generate", json=body, headers={"Host": "short.test"})
    plain = await memory.http.post("/api/generate", json=body, headers={"Host": "other.test"})
    assert pinned.headers["x-ollamaflow-backend"] == "a" and pinned.json()["eval_count"] == 3
    assert plain.headers["x-ollamaflow-backend"] == "b" and plain.json()["eval_count"] > 3


async def test_a_frontend_that_refuses_embeddings_says_so_in_the_client_s_format(memory: InMemory) -> None:
    frontends = [FrontendView(id="chat-only", hostname="*", backends=("a",), allow_embeddings=False)]
    await memory.writer.publish(content({"a": BACKENDS["a"]}, frontends), 1)
    await eventually(lambda: memory.dp.state.revision == 1, 5, "revision 1 applied")
    native = await memory.http.post("/api/embed", json={"model": "all-minilm", "input": "x"})
    assert native.status_code >= 400 and isinstance(native.json()["error"], str)
    openai_client = openai.AsyncOpenAI(base_url="http://dp/v1", api_key="none", http_client=memory.http)
    with pytest.raises(openai.APIStatusError) as refused:
        await openai_client.embeddings.create(model="all-minilm", input="x")
    assert refused.value.status_code == native.status_code


async def test_the_openai_model_list_joins_an_ollama_and_an_openai_backend(memory: InMemory) -> None:
    await memory.publish({"a": BACKENDS["a"]}, 1)
    frontends = [FrontendView(id="all", hostname="*", backends=("a", "v"))]
    views = (
        content({"a": BACKENDS["a"]}, frontends).backends
        + content({"v": BACKENDS["v"]}, frontends, api_format="OpenAI").backends
    )
    await memory.writer.publish(SnapshotContent(frontends=tuple(frontends), backends=views), 2)
    await eventually(lambda: memory.dp.state.revision == 2, 5, "revision 2 applied")
    openai_client = openai.AsyncOpenAI(base_url="http://dp/v1", api_key="none", http_client=memory.http)
    listed = {model.id async for model in openai_client.models.list()}
    assert {"llama3.2:latest", "qwen2.5:0.5b"} <= listed


async def test_metrics_alone_count_each_request_at_the_next_scrape(memory: InMemory) -> None:
    # Metrics on, access log and traces off: the metrics observe each request directly, in batches
    # of BATCH, and a scrape counts what waits; fewer requests than a batch must all be there.
    await memory.publish({"a": BACKENDS["a"]}, 1)
    client = ollama.AsyncClient(host="http://dp", transport=memory.http._transport)
    replies = [
        await client.chat(model="llama3.2", messages=[{"role": "user", "content": "hi"}]) for _ in range(3)
    ]
    missing = await memory.http.post("/api/chat", json={"model": "no-such-model", "messages": []})
    assert missing.status_code == 404
    text = (await memory.http.get("/metrics")).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    chat = {"frontend": "all", "backend": "a", "model": "llama3.2", "endpoint": "/api/chat"}
    served = {**chat, "client_format": "ollama", "status": "200", "relay": "passthrough"}
    assert samples[("ollamaflow_dataplane_requests_total", tuple(sorted(served.items())))] == 3
    # The backend answered the unknown model's 404: the name takes no label of its own.
    refused = {**served, "model": "other", "status": "404"}
    assert samples[("ollamaflow_dataplane_requests_total", tuple(sorted(refused.items())))] == 1
    durations = samples[("ollamaflow_dataplane_request_duration_seconds_count", tuple(sorted(chat.items())))]
    assert durations == 3
    by_model = {"frontend": "all", "backend": "a", "model": "llama3.2"}
    output = samples[("ollamaflow_dataplane_output_tokens_total", tuple(sorted(by_model.items())))]
    assert output == sum(reply.eval_count or 0 for reply in replies) > 0


async def test_a_request_cancelled_while_its_body_arrives_is_still_counted(memory: InMemory) -> None:
    await memory.publish({"a": BACKENDS["a"]}, 1)
    body_never_comes = asyncio.Event()

    async def receive() -> dict[str, object]:
        await body_never_comes.wait()
        return {"type": "http.disconnect"}

    async def send(message: object) -> None:
        return None

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/chat",
        "raw_path": b"/api/chat",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"dp"), (b"content-length", b"100")],
        "client": ("127.0.0.1", 5555),
        "server": ("dp", 80),
    }
    request = asyncio.create_task(memory.dp(scope, receive, send))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    request.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await request
    text = (await memory.http.get("/metrics")).text
    unanswered = {
        "frontend": "all",
        "backend": "none",
        "model": "none",
        "endpoint": "/api/chat",
        "client_format": "ollama",
        "status": "0",
        "relay": "none",
    }
    samples = {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        if family.name == "ollamaflow_dataplane_requests"
        for s in family.samples
    }
    assert samples[tuple(sorted(unanswered.items()))] == 1
