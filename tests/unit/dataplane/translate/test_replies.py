"""Whole (non-streamed) replies both ways, and stream edge cases the transcripts do not cover."""

from __future__ import annotations

import json
from typing import Any

import ollama
import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion

from dataplane.translate.ollama_on_openai import OllamaStream, ollama_reply
from dataplane.translate.openai_on_ollama import openai_reply
from shared.errors import UpstreamProtocolError
from tests.dataplane.translate.transcripts import CREATED, NOW_NS, STARTED_NS, counting_ids


def encode(value: Any) -> bytes:
    return json.dumps(value).encode()


def chat_completion(message: dict[str, Any], finish_reason: str) -> bytes:
    return encode(
        {
            "id": "chatcmpl-x",
            "object": "chat.completion",
            "created": 1,
            "model": "qwen3",
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29},
        }
    )


def test_openai_chat_completion_with_tool_calls_to_ollama() -> None:
    body = chat_completion(
        {
            "role": "assistant",
            "content": None,
            "reasoning": "think",
            "tool_calls": [
                {
                    "id": "call_abc",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {"type": "function", "function": {"name": "noop", "arguments": ""}},
            ],
        },
        "tool_calls",
    )
    out = ollama_reply(
        body, model="qwen3:latest", chat=True, started_ns=STARTED_NS, now_ns=NOW_NS, ids=counting_ids()
    )
    reply = ollama.ChatResponse.model_validate_json(out)
    assert json.loads(out) == {
        "model": "qwen3:latest",
        "created_at": "2025-05-01T10:00:01.5Z",
        "message": {
            "role": "assistant",
            "content": "",
            "thinking": "think",
            "tool_calls": [
                {
                    "id": "call_abc",
                    "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}},
                },
                {"id": "call_001", "function": {"index": 1, "name": "noop", "arguments": {}}},
            ],
        },
        "done": True,
        "done_reason": "stop",
        "total_duration": 1_500_000_000,
        "prompt_eval_count": 19,
        "eval_count": 10,
    }
    assert reply.message.tool_calls[0].function.arguments == {"city": "Paris"}


def test_openai_text_completion_to_ollama_generate() -> None:
    body = encode(
        {
            "id": "cmpl-1",
            "object": "text_completion",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "text": "def add", "logprobs": None, "finish_reason": "length"}],
        }
    )
    out = ollama_reply(body, model="m", chat=False, started_ns=STARTED_NS, now_ns=NOW_NS, ids=counting_ids())
    reply = ollama.GenerateResponse.model_validate_json(out)
    assert (reply.response, reply.done, reply.done_reason, reply.eval_count) == (
        "def add",
        True,
        "length",
        None,
    )


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        encode({"choices": []}),
        encode({"error": {"message": "boom"}}),
        chat_completion(
            {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "[1]"}}]},
            "tool_calls",
        ),
    ],
)
def test_unusable_openai_replies_are_protocol_errors(body: bytes) -> None:
    with pytest.raises(UpstreamProtocolError):
        ollama_reply(body, model="m", chat=True, started_ns=STARTED_NS, now_ns=NOW_NS, ids=counting_ids())


def test_native_chat_reply_to_chat_completion() -> None:
    native = encode(
        {
            "model": "llama3.2",
            "created_at": "2025-05-01T10:00:03.2Z",
            "message": {
                "role": "assistant",
                "content": "",
                "thinking": "hmm",
                "tool_calls": [
                    {"function": {"index": 0, "name": "get_weather", "arguments": {"city": "Tokyo"}}}
                ],
            },
            "done": True,
            "done_reason": "stop",
            "prompt_eval_count": 26,
            "eval_count": 7,
            "logprobs": [{"token": "x", "logprob": -0.5, "bytes": [120], "top_logprobs": []}],
        }
    )
    out = openai_reply(
        native, model="llama3.2", chat=True, id="chatcmpl-7", created=CREATED, ids=counting_ids()
    )
    reply = ChatCompletion.model_validate_json(out)
    assert (reply.id, reply.created, reply.model, reply.object) == (
        "chatcmpl-7",
        CREATED,
        "llama3.2",
        "chat.completion",
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0]
    assert (call.id, call.function.name, json.loads(call.function.arguments)) == (
        "call_001",
        "get_weather",
        {"city": "Tokyo"},
    )
    assert choice.logprobs.content[0].token == "x"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (26, 7, 33)
    assert json.loads(out)["choices"][0]["message"]["reasoning"] == "hmm"


def test_native_generate_reply_to_text_completion() -> None:
    native = encode(
        {
            "model": "m",
            "created_at": "2025-05-01T10:00:03.2Z",
            "response": "Hello",
            "done": True,
            "done_reason": "length",
            "context": [1, 2],
            "prompt_eval_count": 3,
            "eval_count": 5,
        }
    )
    out = openai_reply(native, model="m", chat=False, id="cmpl-1", created=CREATED, ids=counting_ids())
    reply = Completion.model_validate_json(out)
    assert (reply.choices[0].text, reply.choices[0].finish_reason, reply.usage.total_tokens) == (
        "Hello",
        "length",
        8,
    )


def test_native_error_body_is_a_protocol_error() -> None:
    with pytest.raises(UpstreamProtocolError, match="boom"):
        openai_reply(b'{"error":"boom"}', model="m", chat=True, id="c", created=1, ids=counting_ids())


def sse(*events: Any) -> bytes:
    return b"".join(b"data: " + (e if isinstance(e, bytes) else encode(e)) + b"\n\n" for e in events)


def delta(value: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": value, "finish_reason": finish}]}


def test_stream_durations_come_from_the_times_fed_in() -> None:
    stream = OllamaStream(model="m", chat=True, started_ns=STARTED_NS, ids=counting_ids())
    assert stream.feed(sse(delta({"role": "assistant", "content": ""})), STARTED_NS + 100) == []
    first = stream.feed(sse(delta({"content": "a"})), STARTED_NS + 300)
    assert json.loads(first[0])["message"]["content"] == "a"
    stream.feed(
        sse(
            delta({"content": "b"}, "stop"),
            {"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2}},
        ),
        STARTED_NS + 800,
    )
    final = json.loads(stream.feed(b"data: [DONE]\n\n", STARTED_NS + 1000)[0])
    assert (final["total_duration"], final["prompt_eval_duration"], final["eval_duration"]) == (
        1000,
        300,
        700,
    )
    assert (final["prompt_eval_count"], final["eval_count"], final["done_reason"]) == (4, 2, "stop")
    assert stream.close(STARTED_NS + 2000) == []


def test_done_without_a_finish_is_an_error_not_success() -> None:
    stream = OllamaStream(model="m", chat=True, started_ns=STARTED_NS, ids=counting_ids())
    lines = stream.feed(sse(delta({"content": "a"}), b"[DONE]"), NOW_NS)
    assert [json.loads(line) for line in lines][-1] == {"error": "backend stream ended unexpectedly"}
    assert stream.ended and stream.feed(sse(delta({"content": "late"})), NOW_NS) == []


def test_finish_and_usage_without_done_still_complete() -> None:
    stream = OllamaStream(model="m", chat=False, started_ns=STARTED_NS, ids=counting_ids())
    stream.feed(
        sse(
            {
                "choices": [{"index": 0, "text": "x", "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1},
            }
        ),
        NOW_NS,
    )
    final = json.loads(stream.close(NOW_NS)[0])
    assert final["done"] is True and final["response"] == ""


def test_unparseable_streamed_tool_arguments_fail_the_stream() -> None:
    stream = OllamaStream(model="m", chat=True, started_ns=STARTED_NS, ids=counting_ids())
    lines = stream.feed(
        sse(
            delta({"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f", "arguments": '{"a":'}}]}),
            delta({}, "tool_calls"),
        ),
        NOW_NS,
    )
    assert "error" in json.loads(lines[-1]) and stream.ended


def test_tool_calls_without_index_are_told_apart_by_id() -> None:
    stream = OllamaStream(model="m", chat=True, started_ns=STARTED_NS, ids=counting_ids())
    lines = stream.feed(
        sse(
            delta({"tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": '{"a"'}}]}),
            delta({"tool_calls": [{"function": {"arguments": ":1}"}}]}),
            delta({"tool_calls": [{"id": "c2", "function": {"name": "g", "arguments": "{}"}}]}),
            delta({}, "tool_calls"),
        ),
        NOW_NS,
    )
    calls = json.loads(lines[-1])["message"]["tool_calls"]
    assert [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in calls] == [
        ("c1", "f", {"a": 1}),
        ("c2", "g", {}),
    ]


def test_unreadable_event_fails_the_stream() -> None:
    stream = OllamaStream(model="m", chat=True, started_ns=STARTED_NS, ids=counting_ids())
    lines = stream.feed(b"data: {oops\n\n", NOW_NS)
    assert json.loads(lines[0]) == {"error": "backend sent an unreadable stream event"}


def test_flat_vllm_error_event_keeps_its_message() -> None:
    stream = OllamaStream(model="m", chat=True, started_ns=STARTED_NS, ids=counting_ids())
    flat = {
        "object": "error",
        "message": "prompt too long",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    }
    lines = stream.feed(sse(delta({"content": "a"}), flat, b"[DONE]"), NOW_NS)
    assert [json.loads(line) for line in lines][-1] == {"error": "prompt too long"}


def test_tool_arguments_sent_as_an_object_are_accepted() -> None:
    message = {
        "role": "assistant",
        "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": {"a": 1}}}],
    }
    out = ollama_reply(
        chat_completion(message, "tool_calls"),
        model="m",
        chat=True,
        started_ns=STARTED_NS,
        now_ns=NOW_NS,
        ids=counting_ids(),
    )
    assert json.loads(out)["message"]["tool_calls"][0]["function"]["arguments"] == {"a": 1}
