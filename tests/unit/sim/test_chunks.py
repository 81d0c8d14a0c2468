"""Stream framing and reply bodies of both APIs, built without sockets."""

from __future__ import annotations

import json
import re

import pytest

from ollamaflow.sim import ollama_chunks, openai_chunks
from ollamaflow.sim.asgi import ApiError
from ollamaflow.sim.dialect import OLLAMA_V1, OPENAI
from ollamaflow.sim.ollama_wire import (
    check_format,
    check_images,
    keep_alive_seconds,
    read_options,
    think_value,
)
from ollamaflow.sim.plan import Ask, Tool, make_plan
from ollamaflow.sim.timing import Metrics, WallClock, rfc3339

METRICS = Metrics(10, 2, 5, 3, 12, 4)
TOOL = Tool(
    "get_weather", {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
)


def _plan(**fields: object):  # type: ignore[no-untyped-def]
    return make_plan(Ask(**{"text": "hi", "prompt_tokens": 5, "answer_tokens": 4, **fields}))  # type: ignore[arg-type]


def _sse(body: bytes) -> list[str]:
    """The data of each SSE event; every event must end with a blank line."""
    assert body.endswith(b"\n\n")
    events = body.decode().split("\n\n")[:-1]
    assert all(event.startswith("data: ") and "\n" not in event for event in events)
    return [event[len("data: ") :] for event in events]


def test_rfc3339_is_gos_format() -> None:
    assert rfc3339(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123456789Z"
    assert rfc3339(1_700_000_000_100_000_000) == "2023-11-14T22:13:20.1Z"
    assert rfc3339(1_700_000_000_000_000_000) == "2023-11-14T22:13:20Z"
    assert WallClock().now().endswith("Z")


def test_ollama_piece_lines_are_compact_ndjson() -> None:
    chat = ollama_chunks.PieceLines("llama3.2", chat=True).piece("T", "Hi\u2028")
    assert chat.endswith(b"\n") and chat.count(b"\n") == 1
    assert b"\\u2028" in chat  # escaped as Go does, so that line splitters never cut it
    assert json.loads(chat) == {
        "model": "llama3.2",
        "created_at": "T",
        "message": {"role": "assistant", "content": "Hi\u2028"},
        "done": False,
    }
    thought = json.loads(ollama_chunks.PieceLines("m", chat=False).piece("T", "hm", thinking=True))
    assert thought == {"model": "m", "created_at": "T", "response": "", "thinking": "hm", "done": False}


def test_ollama_bodies_escape_like_go() -> None:
    assert (
        ollama_chunks.encode({"t": "<a & b>\u2029é"}) == b'{"t":"\\u003ca \\u0026 b\\u003e\\u2029\xc3\xa9"}'
    )


def test_ollama_final_and_whole_replies() -> None:
    final = ollama_chunks.chat_final("m", "T", "length", METRICS)
    assert final["done"] is True and final["done_reason"] == "length" and final["message"]["content"] == ""
    assert all(
        isinstance(final[key], int) for key in ("total_duration", "eval_count", "prompt_eval_duration")
    )
    assert "load_duration" not in ollama_chunks.chat_final("m", "T", "stop", Metrics(10, 0, 5, 3, 12, 4))
    whole = ollama_chunks.chat_whole("m", "T", _plan(last_user="get_weather in Oslo", tools=(TOOL,)), METRICS)
    call = whole["message"]["tool_calls"][0]
    assert call["function"] == {"index": 0, "name": "get_weather", "arguments": {"city": "Oslo"}}
    assert whole["message"]["content"] == "" and whole["done_reason"] == "stop"
    generated = ollama_chunks.generate_whole("m", "T", _plan(think=True), METRICS, [1, 2])
    assert list(generated)[:4] == ["model", "created_at", "response", "thinking"] and generated[
        "context"
    ] == [1, 2]
    assert ollama_chunks.load_reply("m", "T", "unload", chat=True)["message"] == {
        "role": "assistant",
        "content": "",
    }


def test_openai_chat_stream_framing() -> None:
    plan = _plan()
    chunks = openai_chunks.ChatChunks("chatcmpl-1", 7, "m", OPENAI, include_usage=False)
    events = _sse(b"".join(chunks.chunks(plan)) + chunks.finish(plan))
    assert events[-1] == "[DONE]"
    objects = [json.loads(event) for event in events[:-1]]
    assert {(o["id"], o["created"], o["object"]) for o in objects} == {
        ("chatcmpl-1", 7, "chat.completion.chunk")
    }
    assert objects[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(o["choices"][0]["delta"].get("content", "") for o in objects)
    assert text == "".join(plan.content)
    assert objects[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert all("usage" not in o for o in objects)
    assert len(objects) == openai_chunks.ChatChunks.count(plan, OPENAI) + 1


def test_openai_usage_chunk_only_when_asked() -> None:
    plan = _plan()
    chunks = openai_chunks.ChatChunks("c", 1, "m", OPENAI, include_usage=True)
    objects = [json.loads(e) for e in _sse(b"".join(chunks.chunks(plan)) + chunks.finish(plan))[:-1]]
    assert all(o["usage"] is None for o in objects[:-1])
    assert objects[-1]["choices"] == [] and objects[-1]["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": 4,
        "total_tokens": 9,
    }


def test_openai_tool_calls_stream_as_fragments_that_reassemble() -> None:
    plan = _plan(last_user="get_weather and get_time for Lisbon", tools=(TOOL, Tool("get_time")))
    chunks = openai_chunks.ChatChunks("c", 1, "m", OPENAI, include_usage=False)
    objects = [json.loads(e) for e in _sse(b"".join(chunks.chunks(plan)) + chunks.finish(plan))[:-1]]
    calls: dict[int, dict[str, str]] = {}
    for obj in objects:
        for delta in obj["choices"][0]["delta"].get("tool_calls", []):
            call = calls.setdefault(delta["index"], {"id": "", "name": "", "arguments": ""})
            call["id"] += delta.get("id", "")
            call["name"] += delta.get("function", {}).get("name", "")
            call["arguments"] += delta["function"]["arguments"]
    assert [calls[i]["name"] for i in sorted(calls)] == ["get_weather", "get_time"]
    assert json.loads(calls[0]["arguments"]) == {"city": "Lisbon"}
    assert sum(1 for o in objects if o["choices"][0]["delta"].get("tool_calls")) > 3  # fragments, not whole
    assert objects[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_ollama_v1_dialect_streams_tool_calls_whole() -> None:
    plan = _plan(last_user="get_weather for Lisbon", tools=(TOOL,))
    chunks = openai_chunks.ChatChunks("c", 1, "m", OLLAMA_V1, include_usage=True)
    objects = [json.loads(e) for e in _sse(b"".join(chunks.chunks(plan)) + chunks.finish(plan))[:-1]]
    call = objects[1]["choices"][0]["delta"]["tool_calls"][0]
    assert json.loads(call["function"]["arguments"]) == {"city": "Lisbon"} and call["index"] == 0
    assert objects[0]["system_fingerprint"] == "fp_ollama" and "usage" not in objects[0]


def test_openai_whole_replies() -> None:
    reply = openai_chunks.chat_whole("c", 1, "m", OPENAI, _plan(last_user="get_weather Oslo", tools=(TOOL,)))
    message = reply["choices"][0]["message"]
    assert message["content"] is None and json.loads(message["tool_calls"][0]["function"]["arguments"])
    assert reply["choices"][0]["finish_reason"] == "tool_calls"
    limited = openai_chunks.completion_whole("c", 1, "m", OPENAI, [("", _plan(limit=2)), ("p", _plan())])
    assert [c["finish_reason"] for c in limited["choices"]] == ["length", "stop"]
    assert limited["choices"][1]["text"].startswith("p") and limited["usage"]["completion_tokens"] == 6


def test_completion_stream_finishes_on_the_last_text_chunk() -> None:
    plans = [("", _plan())]
    chunks = openai_chunks.CompletionChunks("cmpl-1", 1, "m", OPENAI, include_usage=False)
    objects = [json.loads(e) for e in _sse(b"".join(chunks.chunks(plans)) + chunks.finish(plans))[:-1]]
    assert [o["choices"][0]["finish_reason"] for o in objects] == [None, None, None, "stop"]
    assert all(o["object"] == "text_completion" for o in objects)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, 300.0),
        (10, 10.0),
        (1.5, 1.5),
        ("10m", 600.0),
        ("1h30m", 5400.0),
        ("0", 0.0),
        ("-1m", -1.0),
        (-5, -1.0),
    ],
)
def test_keep_alive(value: object, seconds: float) -> None:
    assert keep_alive_seconds(value, 300.0) == seconds  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-1", 'time: missing unit in duration "-1"'),
        ("5x", 'time: unknown unit "x" in duration "5x"'),
        ("", "invalid"),
    ],
)
def test_keep_alive_errors_are_gos(value: str, message: str) -> None:
    with pytest.raises(ApiError, match=message):
        keep_alive_seconds(value, 300.0)


def test_option_and_field_checks() -> None:
    assert read_options({"num_predict": 5.0, "stop": ["x"], "temperature": 0}) == (5, ("x",))
    with pytest.raises(ApiError, match='option "num_predict" must be of type integer'):
        read_options({"num_predict": "5"})
    with pytest.raises(ApiError, match="array of strings"):
        read_options({"stop": [1]})
    assert think_value(None, "m", capable=True) is True and think_value("low", "m", capable=True) is True
    with pytest.raises(ApiError, match=re.escape('"llama3.2" does not support thinking')):
        think_value(True, "llama3.2", capable=False)
    assert check_format("") is False and check_format("json") is True and check_format({"type": "object"})
    with pytest.raises(ApiError, match="invalid format"):
        check_format("yaml")
    check_images(["aGVsbG8="])
    with pytest.raises(ApiError, match="illegal base64 data at input byte 4"):
        check_images(["data:image/png;base64,aGVsbG8="])
