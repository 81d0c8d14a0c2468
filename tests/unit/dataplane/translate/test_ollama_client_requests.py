"""Ollama clients' requests translated for OpenAI-compatible backends."""

from __future__ import annotations

import json
from typing import Any

import ollama
import pytest

from dataplane.translate.common import BackendCall, LocalReply
from dataplane.translate.errors import Untranslatable
from dataplane.translate.ollama_on_openai import (
    chat_request,
    embed_request,
    embeddings_request,
    generate_request,
)
from tests.dataplane.translate.transcripts import NOW_NS

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
JPEG = "/9j/4AAQSkZJRgABAQ=="
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
SCHEMA = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}


def call(result: BackendCall | LocalReply) -> tuple[str, dict[str, Any]]:
    assert isinstance(result, BackendCall)
    return result.path, json.loads(result.body)


def encode(value: dict[str, Any]) -> bytes:
    return json.dumps(value).encode()


def test_chat_with_images_tools_history_options_and_schema() -> None:
    request = {
        "model": "Qwen3:latest",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is in these, and the weather?", "images": [PNG, JPEG]},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                    {"function": {"name": "get_time", "arguments": {}}},
                ],
            },
            {"role": "tool", "content": "12:00", "tool_name": "get_time"},
            {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
        ],
        "tools": [WEATHER_TOOL],
        "format": SCHEMA,
        "options": {
            "temperature": 0.2,
            "top_p": 0.5,
            "seed": 7,
            "stop": "###",
            "num_predict": 64,
            "frequency_penalty": 0.1,
            "presence_penalty": 0.3,
            "num_ctx": 8192,
            "top_k": 20,
        },
        "think": "high",
        "keep_alive": "10m",
    }
    result = chat_request(encode(request), now_ns=NOW_NS, backend_model="qwen3")
    assert isinstance(result, BackendCall) and result.stream and result.model == "Qwen3:latest"
    assert call(result) == (
        "/v1/chat/completions",
        {
            "model": "qwen3",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is in these, and the weather?"},
                        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                        {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{JPEG}"}},
                    ],
                },
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_2_0",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        },
                        {
                            "id": "call_2_1",
                            "type": "function",
                            "function": {"name": "get_time", "arguments": "{}"},
                        },
                    ],
                },
                {"role": "tool", "content": "12:00", "tool_call_id": "call_2_1"},
                {"role": "tool", "content": "sunny", "tool_call_id": "call_2_0"},
            ],
            "tools": [WEATHER_TOOL],
            "temperature": 0.2,
            "top_p": 0.5,
            "seed": 7,
            "frequency_penalty": 0.1,
            "presence_penalty": 0.3,
            "stop": ["###"],
            "max_tokens": 64,
            "response_format": {"type": "json_schema", "json_schema": {"name": "response", "schema": SCHEMA}},
            "reasoning_effort": "high",
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )


def test_chat_vllm_extras_and_kept_tool_ids() -> None:
    request = {
        "model": "qwen3",
        "stream": False,
        "format": "json",
        "think": False,
        "logprobs": True,
        "top_logprobs": 3,
        "options": {"top_k": 20, "min_p": 0.05, "repeat_penalty": 1.1, "num_predict": -1},
        "messages": [
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": "x",
                "thinking": "hmm",
                "tool_calls": [{"id": "call_kept", "function": {"name": "f", "arguments": {"a": 1}}}],
            },
            {"role": "TOOL", "content": "1", "tool_call_id": "call_kept"},
        ],
    }
    result = chat_request(encode(request), now_ns=NOW_NS, extras=True)
    _, body = call(result)
    assert not result.stream and body["stream"] is False and "stream_options" not in body
    assert body["response_format"] == {"type": "json_object"}
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    assert (body["top_k"], body["min_p"], body["repetition_penalty"]) == (20, 0.05, 1.1)
    assert "max_tokens" not in body
    assert (body["logprobs"], body["top_logprobs"]) == (True, 3)
    assert body["messages"][1]["reasoning"] == "hmm"
    assert body["messages"][1]["tool_calls"][0]["id"] == "call_kept"
    assert body["messages"][2] == {"role": "tool", "content": "1", "tool_call_id": "call_kept"}


@pytest.mark.parametrize(
    ("keep_alive", "reason"),
    [(None, "load"), ("5m", "load"), (0, "unload"), ("0s", "unload"), ("0", "unload")],
)
def test_empty_chat_and_generate_are_load_calls_answered_locally(keep_alive: Any, reason: str) -> None:
    chat = chat_request(encode({"model": "m", "messages": [], "keep_alive": keep_alive}), now_ns=NOW_NS)
    assert isinstance(chat, LocalReply) and chat.status == 200
    reply = ollama.ChatResponse.model_validate_json(chat.body)
    assert (reply.done, reply.done_reason, reply.message.content, reply.model) == (True, reason, "", "m")
    assert json.loads(chat.body)["created_at"] == "2025-05-01T10:00:01.5Z"
    generate = generate_request(encode({"model": "m", "keep_alive": keep_alive}), now_ns=NOW_NS)
    assert isinstance(generate, LocalReply)
    assert ollama.GenerateResponse.model_validate_json(generate.body).done_reason == reason


def test_generate_goes_to_chat_with_system_and_images() -> None:
    request = {"model": "llava", "prompt": "Describe", "system": "You see.", "images": [PNG], "stream": False}
    assert call(generate_request(encode(request), now_ns=NOW_NS)) == (
        "/v1/chat/completions",
        {
            "model": "llava",
            "messages": [
                {"role": "system", "content": "You see."},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Describe"},
                        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    ],
                },
            ],
            "stream": False,
        },
    )


def test_generate_raw_and_suffix_go_to_completions() -> None:
    raw = {"model": "coder", "prompt": "<|fim|>def", "raw": True, "options": {"num_predict": 16}}
    assert call(generate_request(encode(raw), now_ns=NOW_NS)) == (
        "/v1/completions",
        {
            "model": "coder",
            "prompt": "<|fim|>def",
            "max_tokens": 16,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    fim = {"model": "coder", "prompt": "def add(", "suffix": "    return c", "stream": False, "think": "low"}
    assert call(generate_request(encode(fim), now_ns=NOW_NS)) == (
        "/v1/completions",
        {"model": "coder", "prompt": "def add(", "suffix": "    return c", "stream": False},
    )


@pytest.mark.parametrize(
    ("request_body", "message"),
    [
        (b"", "missing request body"),
        (b"{not json", "invalid JSON"),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', "model is required"),
        (b'{"model": "m", "messages": "hi"}', "invalid request"),
        (
            b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "format": "yaml"}',
            "invalid format",
        ),
        (b'{"model": "m", "messages": [{"role": "tool", "content": "x", "tool_name": "f"}]}', "tool message"),
    ],
)
def test_bad_chat_requests_are_400(request_body: bytes, message: str) -> None:
    with pytest.raises(Untranslatable, match=message) as raised:
        chat_request(request_body, now_ns=NOW_NS)
    assert raised.value.status == 400
    assert json.loads(raised.value.ollama_body())["error"] == raised.value.message


@pytest.mark.parametrize(
    "extra",
    [
        {"template": "{{ .Prompt }}"},
        {"context": [1, 2, 3]},
        {"raw": True, "images": [PNG]},
        {"raw": True, "format": "json"},
    ],
)
def test_generate_fields_without_an_openai_equivalent_are_400(extra: dict[str, Any]) -> None:
    with pytest.raises(Untranslatable) as raised:
        generate_request(encode({"model": "m", "prompt": "hi", **extra}), now_ns=NOW_NS)
    assert raised.value.status == 400


def test_logprobs_on_raw_generate_are_501() -> None:
    with pytest.raises(Untranslatable) as raised:
        generate_request(encode({"model": "m", "prompt": "x", "raw": True, "logprobs": True}), now_ns=NOW_NS)
    assert raised.value.status == 501


def test_embed_requests() -> None:
    request = {"model": "minilm", "input": ["a", "b"], "dimensions": 8, "truncate": False}
    result = embed_request(encode(request))
    assert call(result) == (
        "/v1/embeddings",
        {"model": "minilm", "input": ["a", "b"], "encoding_format": "float", "dimensions": 8},
    )
    assert not result.stream
    assert call(embed_request(encode({"model": "minilm", "input": "a"})))[1]["input"] == "a"
    empty = embed_request(encode({"model": "minilm", "input": []}))
    assert isinstance(empty, LocalReply) and json.loads(empty.body) == {"model": "minilm", "embeddings": []}
    ollama.EmbedResponse.model_validate_json(empty.body)


def test_legacy_embeddings_request() -> None:
    assert call(embeddings_request(encode({"model": "minilm", "prompt": "hello"}))) == (
        "/v1/embeddings",
        {"model": "minilm", "input": ["hello"], "encoding_format": "float"},
    )
    empty = embeddings_request(encode({"model": "minilm", "prompt": ""}))
    assert isinstance(empty, LocalReply) and json.loads(empty.body) == {"embedding": []}
