"""The official ``ollama`` client against the simulator in Ollama mode, over real HTTP."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime

import ollama
import pytest

from ollamaflow.sim import content

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture
def client(ollama_url: str) -> ollama.AsyncClient:
    return ollama.AsyncClient(host=ollama_url)


async def test_chat_streamed(client: ollama.AsyncClient) -> None:
    parts = [
        part
        async for part in await client.chat(
            "llama3.2", messages=[{"role": "user", "content": "Say hello"}], stream=True
        )
    ]
    assert [part.done for part in parts] == [False] * 12 + [True]
    assert all(part.model == "llama3.2" and part.message.role == "assistant" for part in parts)
    assert "".join(part.message.content or "" for part in parts) == "".join(
        content.answer_pieces("Say hello", 12)
    )
    final = parts[-1]
    assert final.done_reason == "stop" and final.eval_count == 12 and final.prompt_eval_count
    assert isinstance(final.total_duration, int) and final.total_duration >= final.eval_duration > 0
    datetime.fromisoformat(final.created_at)  # RFC 3339 with zone


async def test_chat_whole_with_num_predict(client: ollama.AsyncClient) -> None:
    reply = await client.chat(
        "LLAMA3.2:latest", messages=[{"role": "user", "content": "Say hello"}], options={"num_predict": 3}
    )
    assert reply.model == "LLAMA3.2:latest"  # echoed as sent
    assert reply.done and reply.done_reason == "length" and reply.eval_count == 3
    assert reply.message.content == "".join(content.answer_pieces("Say hello", 12)[:3])


async def test_chat_tool_call(client: ollama.AsyncClient) -> None:
    messages = [{"role": "user", "content": "What is the weather in Tokyo? Use get_weather."}]
    reply = await client.chat("llama3.2", messages=messages, tools=[WEATHER_TOOL])
    (call,) = reply.message.tool_calls or []
    assert call.function.name == "get_weather" and call.function.arguments == {"city": "Tokyo"}
    assert reply.done_reason == "stop"
    streamed = [
        p async for p in await client.chat("llama3.2", messages=messages, tools=[WEATHER_TOOL], stream=True)
    ]
    calls = [call for part in streamed for call in part.message.tool_calls or []]
    assert [c.function.arguments for c in calls] == [{"city": "Tokyo"}]
    # With the tool's answer as the last message the model replies in text.
    follow_up = [*messages, reply.message, {"role": "tool", "content": "sunny", "tool_name": "get_weather"}]
    answer = await client.chat("llama3.2", messages=follow_up, tools=[WEATHER_TOOL])
    assert answer.message.content and not answer.message.tool_calls


async def test_chat_with_images_and_thinking_errors(client: ollama.AsyncClient) -> None:
    reply = await client.chat(
        "llama3.2", messages=[{"role": "user", "content": "what is this", "images": [b"\x89PNG"]}]
    )
    assert reply.message.content
    with pytest.raises(ollama.ResponseError) as error:
        await client.chat("llama3.2", messages=[{"role": "user", "content": "hi"}], think=True)
    assert error.value.status_code == 400 and error.value.error == '"llama3.2" does not support thinking'


async def test_thinking_model(ollama_url: str) -> None:
    from ollamaflow.sim import SimConfig, running_sim

    async with running_sim(SimConfig(models=("qwen3:4b",))) as url:
        client = ollama.AsyncClient(host=url)
        reply = await client.chat("qwen3:4b", messages=[{"role": "user", "content": "hi"}])
        assert reply.message.thinking and reply.message.content
        plain = await client.chat("qwen3:4b", messages=[{"role": "user", "content": "hi"}], think=False)
        assert not plain.message.thinking
        assert "thinking" in ((await client.show("qwen3:4b")).capabilities or [])


async def test_generate(client: ollama.AsyncClient) -> None:
    reply = await client.generate("qwen2.5:0.5b", prompt="Say hello")
    assert reply.response == "".join(content.answer_pieces("Say hello", 12)) and reply.context
    parts = [p async for p in await client.generate("qwen2.5:0.5b", prompt="Say hello", stream=True)]
    assert "".join(p.response for p in parts) == reply.response and parts[-1].done
    loaded = await client.generate("qwen2.5:0.5b", prompt="")
    assert loaded.done_reason == "load" and loaded.response == ""


async def test_embed_and_legacy_embeddings(client: ollama.AsyncClient) -> None:
    reply = await client.embed("all-minilm", input=["first", "second"])
    assert reply.model == "all-minilm" and len(reply.embeddings) == 2
    assert all(
        len(v) == 384 and math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-6) for v in reply.embeddings
    )
    assert reply.embeddings[0] == pytest.approx(content.embedding("first", 384))
    single = await client.embed("all-minilm", input="first", dimensions=32)
    assert single.embeddings[0] == pytest.approx(content.embedding("first", 32))
    legacy = await client.embeddings("all-minilm", prompt="first")
    assert len(legacy.embedding) == 384 and not math.isclose(sum(x * x for x in legacy.embedding), 1.0)
    with pytest.raises(ollama.ResponseError) as error:
        await client.embed("nomic-embed-text", input="x")
    assert error.value.status_code == 404
    assert error.value.error == 'model "nomic-embed-text" not found, try pulling it first'


async def test_list_show_ps(client: ollama.AsyncClient) -> None:
    listed = await client.list()
    assert [m.model for m in listed.models] == ["llama3.2:latest", "qwen2.5:0.5b", "all-minilm:latest"]
    assert all(m.digest and m.size and m.details and m.details.format == "gguf" for m in listed.models)
    shown = await client.show("llama3.2")
    assert shown.capabilities == ["completion", "tools"] and shown.modelinfo is not None
    assert shown.modelinfo["llama.context_length"] > 0 and shown.details and shown.details.family == "llama"
    assert (await client.show("all-minilm")).capabilities == ["embedding"]
    assert (await client.ps()).models == []
    await client.chat("llama3.2", messages=[{"role": "user", "content": "hi"}], keep_alive="10m")
    (running,) = (await client.ps()).models
    assert running.model == "llama3.2:latest" and running.expires_at is not None
    remaining = (running.expires_at - datetime.now(UTC)).total_seconds()
    assert 500 < remaining <= 600
    await client.generate("llama3.2", prompt="", keep_alive=0)
    assert (await client.ps()).models == []


async def test_pull_with_progress(client: ollama.AsyncClient) -> None:
    progress = [p async for p in await client.pull("phi3:mini", stream=True)]
    statuses = [p.status for p in progress]
    assert statuses[0] == "pulling manifest" and statuses[-3:] == [
        "verifying sha256 digest",
        "writing manifest",
        "success",
    ]
    downloads = [p for p in progress if p.digest]
    assert len(downloads) >= 4 and all(p.total and p.completed for p in downloads)
    assert downloads[3].completed == downloads[3].total
    assert "phi3:mini" in [m.model for m in (await client.list()).models]
    assert (await client.pull("tinyllama")).status == "success"
    assert (await client.show("tinyllama")).capabilities == ["completion", "tools"]
    with pytest.raises(ollama.ResponseError, match="file does not exist"):
        await client.pull("missing-model")


async def test_copy_and_delete(client: ollama.AsyncClient) -> None:
    assert (await client.copy("llama3.2", "llama3-backup")).status == "success"
    models = {m.model: m.digest for m in (await client.list()).models}
    assert models["llama3-backup:latest"] == models["llama3.2:latest"]
    assert (await client.delete("llama3-backup")).status == "success"
    with pytest.raises(ollama.ResponseError) as error:
        await client.delete("llama3-backup")
    assert error.value.status_code == 404 and error.value.error == "model 'llama3-backup' not found"
    with pytest.raises(ollama.ResponseError) as error:
        await client.copy("nope", "other")
    assert error.value.status_code == 404 and error.value.error == 'model "nope" not found'


async def test_unknown_model(client: ollama.AsyncClient) -> None:
    for call in (
        client.chat("nope", messages=[{"role": "user", "content": "hi"}]),
        client.generate("nope", prompt="hi"),
        client.show("nope"),
    ):
        with pytest.raises(ollama.ResponseError) as error:
            await call
        assert error.value.status_code == 404 and error.value.error == "model 'nope' not found"
    with pytest.raises(ollama.ResponseError) as error:
        await client.chat("all-minilm", messages=[{"role": "user", "content": "hi"}])
    assert error.value.status_code == 400 and error.value.error == '"all-minilm" does not support chat'


async def test_sync_client(ollama_url: str) -> None:
    def use() -> tuple[str, list[str]]:
        client = ollama.Client(host=ollama_url)
        whole = client.chat("llama3.2", messages=[{"role": "user", "content": "hi"}]).message.content or ""
        parts = client.chat("llama3.2", messages=[{"role": "user", "content": "hi"}], stream=True)
        return whole, [part.message.content or "" for part in parts]

    # The simulator runs on this test's event loop, so the blocking client runs in a thread.
    whole, parts = await asyncio.to_thread(use)
    assert whole and "".join(parts) == whole
