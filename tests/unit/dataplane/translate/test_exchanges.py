"""Whole exchanges: an official client's real request, translated, answered by a recorded backend reply.

An httpx MockTransport stands where the data plane's route will be: it runs the exchange's request,
reply and stream steps over the recorded backend bytes (fed in small pieces), and the official client
reads the result. Nothing of ours is mocked; only the network is left out.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import ollama
import openai
import pytest

from dataplane.translate.common import BackendCall, LocalReply
from dataplane.translate.errors import Untranslatable
from dataplane.translate.exchanges import NDJSON, SSE, Translations
from shared.snapshot import ApiFormat
from tests.dataplane.translate.transcripts import FIXTURES, NOW_NS, STARTED_NS, chunks, counting_ids

CHAT_COMPLETION = json.dumps(
    {
        "id": "chatcmpl-b",
        "object": "chat.completion",
        "created": 1,
        "model": "qwen3",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
    }
).encode()
NATIVE_CHAT = json.dumps(
    {
        "model": "llama3.2:latest",
        "created_at": "2025-05-01T10:00:03.2Z",
        "message": {"role": "assistant", "content": "Paris."},
        "done": True,
        "done_reason": "stop",
        "prompt_eval_count": 9,
        "eval_count": 2,
    }
).encode()


class Proxy:
    """The route's part, minus the network: translate, ask the recorded backend, translate back."""

    def __init__(
        self, client_format: ApiFormat, backend_format: ApiFormat, backend: Callable[[BackendCall], bytes]
    ) -> None:
        self.translations = Translations(counting_ids())
        self.client_format = client_format
        self.backend_format = backend_format
        self.backend = backend
        self.calls: list[BackendCall] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        try:
            exchange = self.translations.for_request(
                request.url.path, self.client_format, self.backend_format, backend="b1"
            )
            assert exchange is not None
            call = exchange.request(request.content, now_ns=STARTED_NS, backend_model=None)
        except Untranslatable as error:
            body = error.ollama_body() if self.client_format == "Ollama" else error.openai_body()
            return httpx.Response(error.status, content=body)
        if isinstance(call, LocalReply):
            return httpx.Response(call.status, content=call.body)
        self.calls.append(call)
        answer = self.backend(call)
        if not call.stream:
            return httpx.Response(
                200, content=exchange.reply(call, answer, started_ns=STARTED_NS, now_ns=NOW_NS)
            )
        stream = exchange.stream(call, started_ns=STARTED_NS)
        out = [piece for part in chunks(answer, 5) for piece in stream.feed(part, NOW_NS)] + stream.close(
            NOW_NS
        )
        return httpx.Response(
            200, content=b"".join(out), headers={"Content-Type": exchange.stream_content_type}
        )


def ollama_client(proxy: Proxy) -> ollama.Client:
    return ollama.Client(host="http://127.0.0.1:9", transport=httpx.MockTransport(proxy))


def openai_client(proxy: Proxy) -> openai.OpenAI:
    return openai.OpenAI(
        api_key="x",
        base_url="http://127.0.0.1:9/v1",
        max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(proxy)),
    )


def test_ollama_client_streams_tool_calls_from_openai_backend() -> None:
    recorded = (FIXTURES / "from_openai" / "chat_tools.sse").read_bytes()
    proxy = Proxy("Ollama", "OpenAI", lambda call: recorded)
    parts = list(
        ollama_client(proxy).chat(
            model="qwen3",
            messages=[{"role": "user", "content": "weather?"}],
            stream=True,
            tools=[
                {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
            ],
        )
    )
    call = proxy.calls[0]
    assert (call.path, call.stream) == ("/v1/chat/completions", True)
    assert json.loads(call.body)["stream_options"] == {"include_usage": True}
    names = [c.function.name for p in parts for c in p.message.tool_calls or []]
    assert names == ["get_weather", "get_time"] and parts[-1].done


def test_ollama_client_whole_chat_and_load_call_from_openai_backend() -> None:
    proxy = Proxy("Ollama", "OpenAI", lambda call: CHAT_COMPLETION)
    client = ollama_client(proxy)
    reply = client.chat(model="qwen3", messages=[{"role": "user", "content": "Capital of France?"}])
    assert (reply.message.content, reply.done_reason, reply.eval_count) == ("Paris.", "stop", 2)
    assert json.loads(proxy.calls[0].body)["stream"] is False
    loaded = client.chat(model="qwen3", messages=[])
    assert loaded.done_reason == "load" and len(proxy.calls) == 1


def test_ollama_client_generate_stream_from_completions_backend() -> None:
    recorded = (FIXTURES / "from_openai" / "completion_raw.sse").read_bytes()
    proxy = Proxy("Ollama", "OpenAI", lambda call: recorded)
    parts = list(ollama_client(proxy).generate(model="coder", prompt="def", raw=True, stream=True))
    assert proxy.calls[0].path == "/v1/completions"
    assert "".join(p.response for p in parts) == "def add(a, b):" and parts[-1].done


def test_ollama_client_sees_untranslatable_as_its_own_error() -> None:
    proxy = Proxy("Ollama", "OpenAI", lambda call: b"")
    with pytest.raises(ollama.ResponseError) as raised:
        ollama_client(proxy).generate(model="m", prompt="x", template="{{ .Prompt }}")
    assert raised.value.status_code == 400 and "template" in raised.value.error
    with pytest.raises(ollama.ResponseError) as raised:
        ollama_client(proxy).push("m")
    assert raised.value.status_code == 501 and "not supported" in raised.value.error


def test_openai_client_streams_from_ollama_backend_with_usage() -> None:
    recorded = (FIXTURES / "from_ollama" / "chat_text.ndjson").read_bytes()
    proxy = Proxy("OpenAI", "Ollama", lambda call: recorded)
    stream = openai_client(proxy).chat.completions.create(
        model="llama3.2",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    seen = list(stream)
    call = proxy.calls[0]
    assert (call.path, call.include_usage, json.loads(call.body)["stream"]) == ("/api/chat", True, True)
    assert len({chunk.id for chunk in seen}) == 1 and seen[0].id.startswith("chatcmpl-")
    assert seen[-1].usage is not None and seen[-1].usage.total_tokens == 263


def test_openai_client_whole_chat_and_errors_from_ollama_backend() -> None:
    proxy = Proxy("OpenAI", "Ollama", lambda call: NATIVE_CHAT)
    client = openai_client(proxy)
    first = client.chat.completions.create(model="llama3.2", messages=[{"role": "user", "content": "hi"}])
    second = client.chat.completions.create(model="llama3.2", messages=[{"role": "user", "content": "hi"}])
    assert first.choices[0].message.content == "Paris." and first.usage.total_tokens == 11
    assert first.id != second.id
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="llama3.2", n=2, messages=[{"role": "user", "content": "hi"}])
    assert raised.value.param == "n"


@pytest.mark.parametrize(
    ("path", "client_format", "backend_format", "expected"),
    [
        ("/api/chat", "Ollama", "Ollama", None),
        ("/v1/chat/completions", "OpenAI", "OpenAI", None),
        ("/v1/responses", "OpenAI", "Ollama", None),
        ("/api/chat", "Ollama", "OpenAI", NDJSON),
        ("/v1/completions", "OpenAI", "Ollama", SSE),
    ],
)
def test_which_requests_need_translation(
    path: str, client_format: ApiFormat, backend_format: ApiFormat, expected: str | None
) -> None:
    exchange = Translations(counting_ids()).for_request(path, client_format, backend_format, backend="b1")
    assert (exchange.stream_content_type if exchange else None) == expected


@pytest.mark.parametrize(
    "path",
    [
        "/api/push",
        "/api/create",
        "/api/copy",
        "/api/delete",
        "/api/blobs/sha256:00",
        "/api/experimental/web_search",
    ],
)
def test_ollama_only_operations_are_501_for_openai_backends(path: str) -> None:
    with pytest.raises(Untranslatable) as raised:
        Translations(counting_ids()).for_request(path, "Ollama", "OpenAI", backend="vllm-1")
    assert raised.value.status == 501


def test_backend_errors_come_back_in_the_client_format() -> None:
    translations = Translations(counting_ids())
    to_ollama = translations.for_request("/api/chat", "Ollama", "OpenAI", backend="b1")
    to_openai = translations.for_request("/v1/embeddings", "OpenAI", "Ollama", backend="b1")
    assert to_ollama is not None and to_openai is not None
    assert to_ollama.error(422, b'{"detail":"bad"}') == (400, b'{"error":"bad"}')
    status, body = to_openai.error(404, b'{"error":"model \\"x\\" not found, try pulling it first"}')
    assert status == 404 and json.loads(body)["error"]["code"] == "model_not_found"
