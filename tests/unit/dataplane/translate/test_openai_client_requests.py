"""OpenAI clients' requests translated for Ollama backends' native API."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dataplane.translate.common import BackendCall
from dataplane.translate.errors import Untranslatable
from dataplane.translate.openai_on_ollama import chat_request, completion_request, embeddings_request

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
SCHEMA = {"type": "object", "properties": {"answer": {"type": "integer"}}}


def encode(value: dict[str, Any]) -> bytes:
    return json.dumps(value).encode()


def body(result: BackendCall) -> dict[str, Any]:
    return json.loads(result.body)


def test_chat_messages_parts_images_tools_and_options() -> None:
    request = {
        "model": "llama3.2",
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "auto"},
                    },
                    {"type": "text", "text": "And the weather?"},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "reasoning_content": "look it up",
                "tool_calls": [
                    {
                        "id": "call_abc",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_abc", "content": "sunny"},
        ],
        "tools": [TOOL],
        "max_tokens": 10,
        "max_completion_tokens": 50,
        "stop": "END",
        "seed": 3,
        "frequency_penalty": 0.5,
        "presence_penalty": 0.25,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": SCHEMA, "strict": True},
        },
        "reasoning_effort": "minimal",
        "logprobs": True,
        "top_logprobs": 2,
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": "u1",
        "parallel_tool_calls": True,
    }
    result = chat_request(encode(request), backend_model="llama3.2:latest")
    assert (result.path, result.stream, result.include_usage, result.model) == (
        "/api/chat",
        True,
        True,
        "llama3.2",
    )
    assert body(result) == {
        "model": "llama3.2:latest",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is this?\nAnd the weather?", "images": [PNG]},
            {
                "role": "assistant",
                "content": "",
                "thinking": "look it up",
                "tool_calls": [
                    {"id": "call_abc", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
                ],
            },
            {"role": "tool", "content": "sunny", "tool_name": "get_weather", "tool_call_id": "call_abc"},
        ],
        "stream": True,
        "options": {
            "temperature": 1.0,
            "top_p": 1.0,
            "seed": 3,
            "frequency_penalty": 0.5,
            "presence_penalty": 0.25,
            "stop": ["END"],
            "num_predict": 50,
        },
        "tools": [TOOL],
        "format": SCHEMA,
        "think": "low",
        "logprobs": True,
        "top_logprobs": 2,
    }


def test_chat_defaults_json_mode_and_tool_choice_none() -> None:
    request = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0,
        "top_p": 0.9,
        "response_format": {"type": "json_object"},
        "tools": [TOOL],
        "tool_choice": "none",
        "reasoning_effort": "none",
        "stream_options": {"include_usage": True},
    }
    result = chat_request(encode(request))
    out = body(result)
    assert out["stream"] is False and not result.stream and not result.include_usage
    assert out["options"] == {"temperature": 0, "top_p": 0.9}
    assert out["format"] == "json" and out["think"] is False and "tools" not in out
    text_format = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 5,
        "response_format": {"type": "text"},
    }
    out = body(chat_request(encode(text_format)))
    assert "format" not in out and out["options"]["num_predict"] == 5


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"n": 2}, "n"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"messages": []}, "messages"),
        ({"model": ""}, "model"),
        ({"response_format": {"type": "grammar"}}, "response_format"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "response_format"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
                        ],
                    }
                ]
            },
            "messages",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": "data:image/png,rawbytes"}],
                    }
                ]
            },
            "messages",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
                        ],
                    }
                ]
            },
            "messages",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{broken"}}
                        ],
                    }
                ]
            },
            "messages",
        ),
    ],
)
def test_untranslatable_chat_fields_are_400_with_param(change: dict[str, Any], param: str) -> None:
    request = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **change}
    with pytest.raises(Untranslatable) as raised:
        chat_request(encode(request))
    assert (raised.value.status, raised.value.param) == (400, param)
    error = json.loads(raised.value.openai_body())["error"]
    assert error == {
        "message": raised.value.message,
        "type": "invalid_request_error",
        "param": param,
        "code": None,
    }


def test_completion_request() -> None:
    request = {
        "model": "coder",
        "prompt": ["def add("],
        "suffix": "return c",
        "max_tokens": 16,
        "stream": True,
        "stop": ["\n\n"],
        "temperature": 0.1,
    }
    result = completion_request(encode(request))
    assert (result.path, result.stream, result.include_usage) == ("/api/generate", True, False)
    options = {"temperature": 0.1, "top_p": 1.0, "stop": ["\n\n"], "num_predict": 16}
    assert body(result) == {
        "model": "coder",
        "prompt": "def add(",
        "stream": True,
        "suffix": "return c",
        "options": options,
    }


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"prompt": [1, 2, 3]}, 400),
        ({"prompt": ["a", "b"]}, 400),
        ({"echo": True}, 400),
        ({"best_of": 3}, 400),
        ({"logprobs": 2}, 501),
        ({"n": 3}, 400),
    ],
)
def test_untranslatable_completion_fields(change: dict[str, Any], status: int) -> None:
    with pytest.raises(Untranslatable) as raised:
        completion_request(encode({"model": "m", "prompt": "x", **change}))
    assert raised.value.status == status


def test_embeddings_requests() -> None:
    result = embeddings_request(encode({"model": "minilm", "input": "", "dimensions": 4}))
    assert (result.path, result.base64, result.stream) == ("/api/embed", False, False)
    assert body(result) == {"model": "minilm", "input": [""], "dimensions": 4}
    result = embeddings_request(encode({"model": "minilm", "input": ["a", "b"], "encoding_format": "BASE64"}))
    assert result.base64 and body(result) == {"model": "minilm", "input": ["a", "b"]}


@pytest.mark.parametrize(
    "change",
    [{"input": None}, {"input": []}, {"input": [[1, 2]]}, {"input": [1, 2]}, {"encoding_format": "int8"}],
)
def test_bad_embeddings_requests_are_400(change: dict[str, Any]) -> None:
    with pytest.raises(Untranslatable) as raised:
        embeddings_request(encode({"model": "minilm", "input": "a", **change}))
    assert raised.value.status == 400


def test_native_options_and_keep_alive_ride_along_from_extra_body() -> None:
    request = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.5,
        "options": {"num_ctx": 8192, "temperature": 0.3, "top_k": 10},
        "keep_alive": "1h",
    }
    out = body(chat_request(encode(request)))
    assert out["options"] == {"temperature": 0.5, "top_p": 1.0, "num_ctx": 8192, "top_k": 10}
    assert out["keep_alive"] == "1h"
    completion = {"model": "m", "prompt": "x", "options": {"top_p": 0.2}, "keep_alive": 0}
    out = body(completion_request(encode(completion)))
    assert out["options"] == {"temperature": 1.0, "top_p": 0.2} and out["keep_alive"] == 0
