"""The official ``openai`` client against the simulator, in OpenAI mode and on Ollama's /v1 layer."""

from __future__ import annotations

import json

import openai
import pytest

from ollamaflow.sim import SimConfig, content, running_sim

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}
HELLO = [{"role": "user", "content": "Say hello"}]


@pytest.fixture
def client(openai_url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=openai_url + "/v1", api_key="x", max_retries=0)


async def test_chat_whole(client: openai.AsyncOpenAI) -> None:
    reply = await client.chat.completions.create(model="llama3.2:latest", messages=HELLO)
    assert reply.id.startswith("chatcmpl-") and reply.object == "chat.completion"
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason == "stop"
    assert choice.message.content == "".join(content.answer_pieces("Say hello", 12))
    assert reply.usage and reply.usage.completion_tokens == 12
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 12
    other = await client.chat.completions.create(model="llama3.2:latest", messages=HELLO)
    assert other.id != reply.id


async def test_chat_streamed_with_usage(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="qwen2.5:0.5b",
        messages=HELLO,
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=5,
    )
    chunks = [chunk async for chunk in stream]
    assert len({chunk.id for chunk in chunks}) == 1 and len({chunk.created for chunk in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(content.answer_pieces("Say hello", 12)[:5])
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage and chunks[-1].usage.completion_tokens == 5
    plain = [
        chunk
        async for chunk in await client.chat.completions.create(
            model="qwen2.5:0.5b", messages=HELLO, stream=True
        )
    ]
    assert all(chunk.usage is None for chunk in plain) and plain[-1].choices


async def test_tool_call_streaming_assembles(client: openai.AsyncOpenAI) -> None:
    messages = [{"role": "user", "content": "Use get_weather and get_time for Madrid."}]
    stream = await client.chat.completions.create(
        model="llama3.2:latest", messages=messages, tools=[WEATHER_TOOL, TIME_TOOL], stream=True
    )
    calls: dict[int, dict[str, str]] = {}
    finish = None
    async for chunk in stream:
        for delta in chunk.choices[0].delta.tool_calls or []:
            call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += delta.id or ""
            call["name"] += (delta.function.name or "") if delta.function else ""
            call["arguments"] += (delta.function.arguments or "") if delta.function else ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert [calls[i]["name"] for i in sorted(calls)] == ["get_weather", "get_time"]
    assert json.loads(calls[0]["arguments"]) == {"city": "Madrid"} and json.loads(calls[1]["arguments"]) == {}
    assert all(call["id"].startswith("call_") for call in calls.values())

    # The SDK's own stream helper assembles the same calls.
    async with client.chat.completions.stream(
        model="llama3.2:latest", messages=messages, tools=[WEATHER_TOOL, TIME_TOOL]
    ) as helper:
        final = await helper.get_final_completion()
    assembled = final.choices[0].message.tool_calls or []
    assert [(c.function.name, json.loads(c.function.arguments)) for c in assembled] == [
        ("get_weather", {"city": "Madrid"}),
        ("get_time", {}),
    ]


async def test_tool_choice(client: openai.AsyncOpenAI) -> None:
    forced = await client.chat.completions.create(
        model="llama3.2:latest",
        messages=HELLO,
        tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    assert [c.function.name for c in forced.choices[0].message.tool_calls or []] == ["get_time"]
    assert forced.choices[0].message.content is None
    none = await client.chat.completions.create(
        model="llama3.2:latest",
        messages=[{"role": "user", "content": "get_weather"}],
        tools=[WEATHER_TOOL],
        tool_choice="none",
    )
    assert none.choices[0].message.tool_calls is None and none.choices[0].message.content


async def test_structured_output(client: openai.AsyncOpenAI) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}}
    reply = await client.chat.completions.create(
        model="llama3.2:latest",
        messages=HELLO,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}},
    )
    assert set(json.loads(reply.choices[0].message.content or "")) == {"name", "age"}


async def test_completions(client: openai.AsyncOpenAI) -> None:
    reply = await client.completions.create(model="llama3.2:latest", prompt="Say hello")
    assert reply.object == "text_completion" and reply.choices[0].text == "".join(
        content.answer_pieces("Say hello", 12)
    )
    limited = await client.completions.create(
        model="llama3.2:latest", prompt=["a", "b"], max_tokens=2, echo=True
    )
    assert [c.index for c in limited.choices] == [0, 1] and limited.choices[1].text.startswith("b")
    assert {c.finish_reason for c in limited.choices} == {"length"}
    streamed = [
        c
        async for c in await client.completions.create(
            model="llama3.2:latest", prompt="Say hello", stream=True
        )
    ]
    assert "".join(c.choices[0].text for c in streamed) == reply.choices[0].text
    assert streamed[-1].choices[0].finish_reason == "stop"


async def test_embeddings_float_and_base64(client: openai.AsyncOpenAI) -> None:
    default = await client.embeddings.create(
        model="all-minilm:latest", input=["one", "two"]
    )  # SDK asks for base64
    assert [d.index for d in default.data] == [0, 1] and len(default.data[0].embedding) == 384
    assert default.data[0].embedding == pytest.approx(content.embedding("one", 384), abs=1e-6)
    floats = await client.embeddings.create(
        model="all-minilm:latest", input="one", encoding_format="float", dimensions=16
    )
    assert floats.data[0].embedding == pytest.approx(content.embedding("one", 16))
    assert floats.usage.prompt_tokens == floats.usage.total_tokens == 1
    tokens = await client.embeddings.create(
        model="all-minilm:latest", input=[[1, 2, 3]], encoding_format="float"
    )
    assert len(tokens.data[0].embedding) == 384
    with pytest.raises(openai.BadRequestError):
        await client.embeddings.create(model="llama3.2:latest", input="x")
    with pytest.raises(openai.BadRequestError):
        await client.embeddings.create(model="all-minilm:latest", input="")


async def test_models(client: openai.AsyncOpenAI) -> None:
    ids = [model.id async for model in client.models.list()]
    assert ids == ["llama3.2:latest", "qwen2.5:0.5b", "all-minilm:latest"]
    assert (await client.models.retrieve("qwen2.5:0.5b")).id == "qwen2.5:0.5b"


async def test_model_ids_with_slashes() -> None:
    async with running_sim(
        SimConfig(format="openai", models=("meta-llama/Llama-3.2-1B-Instruct:v1",))
    ) as url:
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        model = await client.models.retrieve("meta-llama/Llama-3.2-1B-Instruct:v1")
        assert model.id == "meta-llama/Llama-3.2-1B-Instruct:v1" and model.object == "model"


async def test_errors(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        await client.chat.completions.create(model="gpt-nope", messages=HELLO)
    assert missing.value.code == "model_not_found" and "gpt-nope" in missing.value.message
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("llama3.2")  # OpenAI-compatible servers match ids exactly
    with pytest.raises(openai.BadRequestError) as empty:
        await client.chat.completions.create(model="llama3.2:latest", messages=[])
    assert empty.value.body and empty.value.type == "invalid_request_error"


async def test_ollama_mode_v1_layer(ollama_url: str) -> None:
    client = openai.AsyncOpenAI(base_url=ollama_url + "/v1", api_key="ollama", max_retries=0)
    reply = await client.chat.completions.create(
        model="llama3.2", messages=HELLO
    )  # Ollama names match loosely
    assert reply.system_fingerprint == "fp_ollama" and reply.model == "llama3.2"
    stream = await client.chat.completions.create(
        model="llama3.2",
        messages=[{"role": "user", "content": "get_weather in Rome"}],
        tools=[WEATHER_TOOL],
        stream=True,
    )
    deltas = [d async for chunk in stream for d in (chunk.choices[0].delta.tool_calls or []) if chunk.choices]
    assert len(deltas) == 1 and json.loads(deltas[0].function.arguments or "") == {
        "city": "Rome"
    }  # whole, not fragments
    embedded = await client.embeddings.create(model="llama3.2", input="x", encoding_format="float")
    assert len(embedded.data[0].embedding) == 3072  # Ollama embeds with any model
    with pytest.raises(openai.NotFoundError) as missing:
        await client.chat.completions.create(model="nope", messages=HELLO)
    assert missing.value.body == {
        "message": "model 'nope' not found",
        "type": "not_found_error",
        "param": None,
        "code": None,
    }
    assert [m.id async for m in client.models.list()] == [
        "llama3.2:latest",
        "qwen2.5:0.5b",
        "all-minilm:latest",
    ]


async def test_api_key_is_required_when_configured() -> None:
    async with running_sim(SimConfig(format="openai", api_key="s3cret")) as url:
        wrong = openai.AsyncOpenAI(base_url=url + "/v1", api_key="nope", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as error:
            await wrong.models.list()
        assert error.value.code == "invalid_api_key"
        right = openai.AsyncOpenAI(base_url=url + "/v1", api_key="s3cret", max_retries=0)
        assert [m.id async for m in right.models.list()]
        assert "s3cret" not in repr(SimConfig(api_key="s3cret"))
