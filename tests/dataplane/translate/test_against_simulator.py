"""Translations against the backend simulator over loopback HTTP, in both directions.

The simulator speaks vLLM-style OpenAI (``format="openai"``) or native Ollama; our translators turn
its real streams into what the other format's client reads, checked with that client's own types.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import httpx
import ollama
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from dataplane.translate.common import BackendCall
from dataplane.translate.embeddings import decode_base64_vector
from dataplane.translate.exchanges import Exchange, Translations
from ollamaflow.sim import running_sim
from shared.snapshot import ApiFormat
from tests.dataplane.translate.transcripts import counting_ids

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


@pytest.fixture
async def openai_backend() -> AsyncIterator[str]:
    async with running_sim(format="openai", fail_mid_stream=True) as url:
        yield url


@pytest.fixture
async def ollama_backend() -> AsyncIterator[str]:
    async with running_sim(fail_mid_stream=True) as url:
        yield url


async def relay(url: str, exchange: Exchange, body: dict[str, object]) -> tuple[BackendCall, bytes]:
    """What the route will do: translate, send, translate the streamed answer back chunk by chunk."""
    started = time.time_ns()
    call = exchange.request(json.dumps(body).encode(), now_ns=started, backend_model=None)
    assert isinstance(call, BackendCall) and call.stream
    out: list[bytes] = []
    async with (
        httpx.AsyncClient(base_url=url) as client,
        client.stream(
            "POST", call.path, content=call.body, headers={"Content-Type": "application/json"}
        ) as response,
    ):
        assert response.status_code == 200
        stream = exchange.stream(call, started_ns=started)
        async for chunk in response.aiter_raw():
            out += stream.feed(chunk, time.time_ns())
        out += stream.close(time.time_ns())
    return call, b"".join(out)


async def set_failures(url: str, rate: float) -> None:
    async with httpx.AsyncClient(base_url=url) as client:
        (await client.post("/_sim/config", json={"fail_rate": rate})).raise_for_status()


async def test_ollama_chat_with_tools_over_an_openai_backend(openai_backend: str) -> None:
    exchange = Translations(counting_ids()).for_request("/api/chat", "Ollama", "OpenAI", backend="sim")
    assert exchange is not None
    request = {
        "model": "llama3.2:latest",
        "tools": TOOLS,
        "messages": [{"role": "user", "content": "Use get_weather for Paris."}],
    }
    _, body = await relay(openai_backend, exchange, request)
    lines = [ollama.ChatResponse.model_validate_json(line) for line in body.splitlines()]
    final = lines[-1]
    assert final.done and final.eval_count and final.prompt_eval_count and final.total_duration
    calls = [call for line in lines for call in line.message.tool_calls or []]
    # The simulator calls every offered tool the user names, its arguments streamed in fragments.
    assert [call.function.name for call in calls] == ["get_weather"]
    assert isinstance(calls[0].function.arguments["city"], str)


async def test_ollama_generate_over_an_openai_backend_fails_cleanly_mid_stream(openai_backend: str) -> None:
    exchange = Translations(counting_ids()).for_request("/api/generate", "Ollama", "OpenAI", backend="sim")
    assert exchange is not None
    await set_failures(openai_backend, 1.0)
    _, body = await relay(openai_backend, exchange, {"model": "llama3.2:latest", "prompt": "Hi"})
    lines = [json.loads(line) for line in body.splitlines()]
    assert "error" in lines[-1] and not any(line.get("done") for line in lines)


async def test_openai_chat_over_an_ollama_backend(ollama_backend: str) -> None:
    exchange = Translations(counting_ids()).for_request(
        "/v1/chat/completions", "OpenAI", "Ollama", backend="sim"
    )
    assert exchange is not None
    request = {
        "model": "llama3.2",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "Hello"}],
    }
    _, body = await relay(ollama_backend, exchange, request)
    events = [line[len(b"data: ") :] for line in body.split(b"\n\n") if line]
    assert events[-1] == b"[DONE]"
    chunks = [ChatCompletionChunk.model_validate_json(event) for event in events[:-1]]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


async def test_openai_chat_over_an_ollama_backend_fails_cleanly_mid_stream(ollama_backend: str) -> None:
    exchange = Translations(counting_ids()).for_request(
        "/v1/chat/completions", "OpenAI", "Ollama", backend="sim"
    )
    assert exchange is not None
    await set_failures(ollama_backend, 1.0)
    request = {"model": "llama3.2", "stream": True, "messages": [{"role": "user", "content": "Hello"}]}
    _, body = await relay(ollama_backend, exchange, request)
    assert b"[DONE]" not in body
    last = json.loads(body.strip().split(b"\n\n")[-1][len(b"data: ") :])
    assert last["error"]["message"]


async def test_openai_tool_calls_over_an_ollama_backend(ollama_backend: str) -> None:
    exchange = Translations(counting_ids()).for_request(
        "/v1/chat/completions", "OpenAI", "Ollama", backend="sim"
    )
    assert exchange is not None
    request = {
        "model": "llama3.2",
        "stream": True,
        "tools": TOOLS,
        "messages": [{"role": "user", "content": "Use get_weather for Paris."}],
    }
    _, body = await relay(ollama_backend, exchange, request)
    events = [line[len(b"data: ") :] for line in body.split(b"\n\n") if line]
    chunks = [ChatCompletionChunk.model_validate_json(event) for event in events[:-1]]
    calls = [call for chunk in chunks for call in chunk.choices[0].delta.tool_calls or []]
    assert [(call.index, call.function.name) for call in calls] == [(0, "get_weather")]
    assert json.loads(calls[0].function.arguments)["city"]
    assert calls[0].id and chunks[-1].choices[0].finish_reason == "tool_calls"


PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="


async def test_images_cross_in_both_directions(openai_backend: str, ollama_backend: str) -> None:
    translations = Translations(counting_ids())
    to_openai = translations.for_request("/api/chat", "Ollama", "OpenAI", backend="sim")
    to_ollama = translations.for_request("/v1/chat/completions", "OpenAI", "Ollama", backend="sim")
    assert to_openai is not None and to_ollama is not None
    ollama_request = {
        "model": "llama3.2:latest",
        "messages": [{"role": "user", "content": "What is this?", "images": [PNG]}],
    }
    call, body = await relay(openai_backend, to_openai, ollama_request)
    parts = json.loads(call.body)["messages"][0]["content"]
    assert parts[1]["image_url"]["url"] == f"data:image/png;base64,{PNG}"
    assert ollama.ChatResponse.model_validate_json(body.splitlines()[-1]).done
    openai_request = {
        "model": "llama3.2",
        "stream": True,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                ],
            }
        ],
    }
    call, body = await relay(ollama_backend, to_ollama, openai_request)
    assert json.loads(call.body)["messages"][0]["images"] == [PNG]
    assert body.endswith(b"data: [DONE]\n\n")


async def ask(url: str, exchange: Exchange, body: dict[str, object]) -> bytes:
    """A non-streamed exchange: translate, send, translate the whole reply."""
    started = time.time_ns()
    call = exchange.request(json.dumps(body).encode(), now_ns=started, backend_model=None)
    assert isinstance(call, BackendCall) and not call.stream
    async with httpx.AsyncClient(base_url=url) as client:
        response = await client.post(
            call.path, content=call.body, headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 200, response.text
    return exchange.reply(call, response.content, started_ns=started, now_ns=time.time_ns())


async def test_whole_replies_and_embeddings_both_ways(openai_backend: str, ollama_backend: str) -> None:
    translations = Translations(counting_ids())

    def exchange(path: str, client: ApiFormat, backend: ApiFormat) -> Exchange:
        found = translations.for_request(path, client, backend, backend="sim")
        assert found is not None
        return found

    chat = {"model": "llama3.2:latest", "stream": False, "messages": [{"role": "user", "content": "Hi"}]}
    reply = ollama.ChatResponse.model_validate_json(
        await ask(openai_backend, exchange("/api/chat", "Ollama", "OpenAI"), chat)
    )
    assert reply.done and reply.message.content and reply.eval_count
    embed = {"model": "all-minilm:latest", "input": ["a", "b"]}
    vectors = ollama.EmbedResponse.model_validate_json(
        await ask(openai_backend, exchange("/api/embed", "Ollama", "OpenAI"), embed)
    ).embeddings
    assert len(vectors) == 2 and abs(sum(v * v for v in vectors[0]) - 1.0) < 1e-6
    completion = {"model": "llama3.2", "messages": [{"role": "user", "content": "Hi"}]}
    whole = ChatCompletion.model_validate_json(
        await ask(ollama_backend, exchange("/v1/chat/completions", "OpenAI", "Ollama"), completion)
    )
    assert whole.choices[0].message.content and whole.usage and whole.usage.completion_tokens
    embeddings = {"model": "all-minilm", "input": "a", "encoding_format": "base64"}
    data = json.loads(await ask(ollama_backend, exchange("/v1/embeddings", "OpenAI", "Ollama"), embeddings))
    assert isinstance(data["data"][0]["embedding"], str) and decode_base64_vector(
        data["data"][0]["embedding"]
    )
