"""Streams chunk by chunk against golden transcripts, read back by the official clients.

from_openai/*.sse (an OpenAI-compatible backend's stream) -> *.expected.ndjson for an Ollama client;
from_ollama/*.ndjson (a native stream) -> *.expected.sse for an OpenAI client. Every transcript is fed
whole, in 7-byte pieces and byte by byte; the output must be the same each time. After a deliberate
change, ``UPDATE_GOLDEN=1 pytest tests/dataplane/translate`` rewrites the expected files: review the diff.
"""

from __future__ import annotations

import json
import random

import httpx
import ollama
import openai
import pytest
from openai._streaming import SSEDecoder
from openai.types import Completion
from openai.types.chat import ChatCompletionChunk

from dataplane.translate.framing import SseDecoder
from dataplane.translate.ollama_on_openai import OllamaStream
from dataplane.translate.openai_on_ollama import OpenAIStream
from tests.dataplane.translate.transcripts import (
    CREATED,
    FIXTURES,
    NOW_NS,
    STARTED_NS,
    STEPS,
    chunks,
    counting_ids,
    golden,
)

FROM_OPENAI = {
    "chat_text": True,
    "chat_tools": True,
    "chat_error": True,
    "chat_truncated": True,
    "completion_raw": False,
}
FROM_OLLAMA = {
    "chat_text": (True, True),
    "chat_tools": (True, False),
    "chat_error": (True, True),
    "chat_truncated": (True, False),
    "generate": (False, True),
}


def to_ollama(data: bytes, step: int, *, chat: bool) -> bytes:
    stream = OllamaStream(model="qwen3:latest", chat=chat, started_ns=STARTED_NS, ids=counting_ids())
    out = [line for part in chunks(data, step) for line in stream.feed(part, NOW_NS)]
    out += stream.close(NOW_NS)
    assert stream.ended
    return b"".join(out)


def to_openai(data: bytes, step: int, *, chat: bool, include_usage: bool) -> bytes:
    stream = OpenAIStream(
        model="llama3.2",
        chat=chat,
        id="chatcmpl-test",
        created=CREATED,
        include_usage=include_usage,
        ids=counting_ids(),
    )
    out = [event for part in chunks(data, step) for event in stream.feed(part, NOW_NS)]
    out += stream.close(NOW_NS)
    assert stream.ended
    return b"".join(out)


@pytest.mark.parametrize("case", sorted(FROM_OPENAI))
def test_openai_backend_stream_to_ollama_lines(case: str) -> None:
    chat = FROM_OPENAI[case]
    data = (FIXTURES / "from_openai" / f"{case}.sse").read_bytes()
    outputs = {to_ollama(data, step, chat=chat) for step in STEPS}
    assert len(outputs) == 1
    produced = outputs.pop()
    assert produced == golden(FIXTURES / "from_openai" / f"{case}.expected.ndjson", produced)
    lines = [json.loads(line) for line in produced.splitlines()]
    assert all(line for line in produced.split(b"\n")[:-1]), "no blank lines"
    *body, last = lines
    for line in body:
        assert not line.get("done") and "error" not in line
    kind = ollama.ChatResponse if chat else ollama.GenerateResponse
    for line in lines if "error" not in last else body:
        kind.model_validate(line)
    if "error" in last:
        assert set(last) == {"error"}
    else:
        assert last["done"] is True


@pytest.mark.parametrize("case", sorted(FROM_OLLAMA))
def test_ollama_backend_stream_to_openai_events(case: str) -> None:
    chat, include_usage = FROM_OLLAMA[case]
    data = (FIXTURES / "from_ollama" / f"{case}.ndjson").read_bytes()
    outputs = {to_openai(data, step, chat=chat, include_usage=include_usage) for step in STEPS}
    assert len(outputs) == 1
    produced = outputs.pop()
    assert produced == golden(FIXTURES / "from_ollama" / f"{case}.expected.sse", produced)
    events = [event.data for event in SSEDecoder().iter_bytes(iter([produced]))]
    kind = ChatCompletionChunk if chat else Completion
    finished = events[-1] == "[DONE]"
    for data in events[:-1]:
        chunk = json.loads(data)
        assert (chunk["id"], chunk["created"]) == ("chatcmpl-test", CREATED)
        # openai-python's Completion type insists on a finish_reason (its stream reader does not validate).
        if chat or not chunk["choices"] or chunk["choices"][0]["finish_reason"]:
            kind.model_validate(chunk)
    if not finished:
        assert json.loads(events[-1])["error"]["message"]
        assert "[DONE]" not in events


def _ollama_client(body: bytes) -> ollama.Client:
    reply = httpx.Response(200, content=body, headers={"Content-Type": "application/x-ndjson"})
    return ollama.Client(host="http://127.0.0.1:9", transport=httpx.MockTransport(lambda request: reply))


def _openai_client(body: bytes) -> openai.OpenAI:
    reply = httpx.Response(200, content=body, headers={"Content-Type": "text/event-stream"})
    http = httpx.Client(transport=httpx.MockTransport(lambda request: reply))
    return openai.OpenAI(api_key="test", base_url="http://127.0.0.1:9/v1", http_client=http, max_retries=0)


def test_ollama_client_reads_assembled_tool_calls() -> None:
    data = (FIXTURES / "from_openai" / "chat_tools.sse").read_bytes()
    client = _ollama_client(to_ollama(data, 1, chat=True))
    parts = list(client.chat(model="qwen3:latest", messages=[{"role": "user", "content": "hi"}], stream=True))
    calls = [call for part in parts for call in part.message.tool_calls or []]
    assert [(call.function.name, dict(call.function.arguments)) for call in calls] == [
        ("get_weather", {"city": "Paris", "days": [1, 2]}),
        ("get_time", {"tz": "CET"}),
    ]
    assert parts[-1].done and parts[-1].done_reason == "stop"
    assert (parts[-1].prompt_eval_count, parts[-1].eval_count) == (20, 12)
    assert "".join(part.message.thinking or "" for part in parts) == "The user wants weather and time."


@pytest.mark.parametrize("case", ["chat_error", "chat_truncated"])
def test_ollama_client_raises_on_broken_stream(case: str) -> None:
    data = (FIXTURES / "from_openai" / f"{case}.sse").read_bytes()
    client = _ollama_client(to_ollama(data, 3, chat=True))
    seen = []
    with pytest.raises(ollama.ResponseError) as raised:
        seen.extend(
            client.chat(model="qwen3:latest", messages=[{"role": "user", "content": "hi"}], stream=True)
        )
    assert [part.message.content for part in seen] == ["Partial"]
    assert raised.value.error in ("CUDA out of memory", "backend stream ended unexpectedly")


def test_openai_client_reads_tool_call_deltas() -> None:
    data = (FIXTURES / "from_ollama" / "chat_tools.ndjson").read_bytes()
    client = _openai_client(to_openai(data, 5, chat=True, include_usage=False))
    stream = client.chat.completions.create(
        model="llama3.2", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    chunks_seen = list(stream)
    assert chunks_seen[0].choices[0].delta.role == "assistant"
    deltas = [choice.delta for chunk in chunks_seen for choice in chunk.choices]
    calls = [call for delta in deltas for call in delta.tool_calls or []]
    assert [(c.index, c.id, c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        (0, "call_001", "get_weather", {"city": "Tokyo"}),
        (1, "call_k3j9x0ab", "get_time", {"tz": "JST", "fmt": {"h24": True}}),
    ]
    assert chunks_seen[-1].choices[0].finish_reason == "tool_calls"


def test_openai_client_reads_usage_chunk() -> None:
    data = (FIXTURES / "from_ollama" / "chat_text.ndjson").read_bytes()
    client = _openai_client(to_openai(data, 1, chat=True, include_usage=True))
    chunks_seen = list(
        client.chat.completions.create(
            model="llama3.2",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks_seen if c.choices)
    assert text == "Bonjour \u2029 é"
    assert chunks_seen[-1].choices == [] and chunks_seen[-1].usage is not None
    assert (chunks_seen[-1].usage.prompt_tokens, chunks_seen[-1].usage.completion_tokens) == (26, 237)
    assert [c.choices[0].finish_reason for c in chunks_seen if c.choices][-1] == "stop"


@pytest.mark.parametrize("case", ["chat_error", "chat_truncated"])
def test_openai_client_raises_on_broken_stream(case: str) -> None:
    data = (FIXTURES / "from_ollama" / f"{case}.ndjson").read_bytes()
    client = _openai_client(to_openai(data, 2, chat=True, include_usage=True))
    stream = client.chat.completions.create(
        model="llama3.2", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    with pytest.raises(openai.APIError, match=r"unexpected EOF|ended unexpectedly"):
        list(stream)


def random_chunks(data: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), k=min(len(data) - 1, rng.randint(1, 40))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


@pytest.mark.parametrize("seed", range(10))
def test_random_chunking_changes_nothing(seed: int) -> None:
    rng = random.Random(seed)
    for case, chat in FROM_OPENAI.items():
        data = (FIXTURES / "from_openai" / f"{case}.sse").read_bytes()
        stream = OllamaStream(model="qwen3:latest", chat=chat, started_ns=STARTED_NS, ids=counting_ids())
        out = [line for part in random_chunks(data, rng) for line in stream.feed(part, NOW_NS)]
        assert b"".join(out + stream.close(NOW_NS)) == to_ollama(data, len(data), chat=chat)
        decoder = SseDecoder()
        ours = [event.data for part in random_chunks(data, rng) for event in decoder.feed(part)]
        assert ours == [event.data for event in SSEDecoder().iter_bytes(iter([data]))]
    for case, (chat, include_usage) in FROM_OLLAMA.items():
        data = (FIXTURES / "from_ollama" / f"{case}.ndjson").read_bytes()
        whole = to_openai(data, len(data), chat=chat, include_usage=include_usage)
        stream = OpenAIStream(
            model="llama3.2",
            chat=chat,
            id="chatcmpl-test",
            created=CREATED,
            include_usage=include_usage,
            ids=counting_ids(),
        )
        out = [event for part in random_chunks(data, rng) for event in stream.feed(part, NOW_NS)]
        assert b"".join(out + stream.close(NOW_NS)) == whole
