"""Property-based fuzz of what clients send, on every endpoint: never a 500, never a hang.

Hypothesis draws the method, path, Host, extra headers and body (random bytes, random JSON, and
objects with the fields the APIs know holding values of any type) and sends them over a raw socket, so
no client library tidies them first. Two frontends are served: one over a simulated Ollama backend,
one over a simulated OpenAI-compatible one, so translation is fuzzed in both directions; both allow
model management, so its handlers are fuzzed too, not only the refusal in front of them. Every answer
must come within the deadline and be below 500, except the few 5xx answers the data plane gives on
purpose (``MEANT``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ollamaflow.sim import SimConfig, running_sim
from shared.snapshot import BackendView, FrontendView, SnapshotContent
from tests.dataplane.harness import RunningDataPlane, SnapshotWriter

ENDPOINTS = [
    ("POST", "/api/generate"),
    ("POST", "/api/chat"),
    ("POST", "/api/embed"),
    ("POST", "/api/embeddings"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"),
    ("POST", "/v1/embeddings"),
    ("GET", "/api/tags"),
    ("GET", "/api/ps"),
    ("POST", "/api/show"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/llama3.2"),
    ("POST", "/api/pull"),
    ("DELETE", "/api/delete"),
    ("POST", "/api/copy"),
    ("POST", "/api/create"),
    ("POST", "/api/push"),
    ("HEAD", "/api/blobs/sha256:" + "0" * 64),
    ("POST", "/api/blobs/sha256:" + "0" * 64),
    ("GET", "/"),
    ("GET", "/api/version"),
]
# Answers in the 5xx range the data plane gives on purpose, as documented: without a control plane,
# model management answers 503; authoring on a frontend of OpenAI-compatible backends only, 501.
MEANT = {
    503: {"/api/pull", "/api/delete", "/api/copy"},
    501: {"/api/create", "/api/push", "/api/blobs/sha256:" + "0" * 64},
}
DEADLINE = 20.0

FIELDS = [
    "model", "messages", "prompt", "input", "stream", "options", "format", "tools", "keep_alive", "think",
    "images", "raw", "system", "template", "suffix", "n", "max_tokens", "temperature", "stop", "logprobs",
    "response_format", "stream_options", "encoding_format", "dimensions", "truncate", "name", "source",
    "destination", "files", "from", "insecure", "context", "tool_choice", "seed", "top_p", "user",
]  # fmt: skip
HEADER_NAMES = [
    "x-ollamaflow-label", "x-ollamaflow-explain", "x-conversation-id", "x-thread-id", "authorization",
    "accept-encoding", "accept", "content-type", "x-forwarded-for", "x-request-id", "te", "connection",
    "upgrade", "x-api-key", "cookie", "origin", "user-agent", "x-ollamaflow-backend", "expect",
]  # fmt: skip

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
models = st.sampled_from(["llama3.2", "llama3.2:latest", "all-minilm", "", "nope:1b"]) | st.text(max_size=30)
known_objects = st.fixed_dictionaries(
    {"model": models},
    optional={name: json_values for name in FIELDS if name != "model"},
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant", "tool", ""]) | st.text(max_size=8)},
        optional={"content": json_values, "images": json_values, "tool_calls": json_values},
    ),
    max_size=3,
)
chat_objects = st.builds(lambda obj, msgs: {**obj, "messages": msgs}, known_objects, messages)
bodies = (
    st.binary(max_size=512)
    | json_values.map(lambda v: json.dumps(v).encode())
    | known_objects.map(lambda v: json.dumps(v).encode())
    | chat_objects.map(lambda v: json.dumps(v).encode())
)
header_values = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=60
).map(str.strip)
headers = st.lists(st.tuples(st.sampled_from(HEADER_NAMES), header_values), max_size=5)
hosts = st.sampled_from(["ollama.test", "openai.test", "unknown.test", "OLLAMA.TEST:80", "[::1]", ""])


@pytest.fixture
async def fuzz_target(dp: RunningDataPlane, writer: SnapshotWriter) -> AsyncIterator[RunningDataPlane]:
    async with (
        running_sim(SimConfig()) as ollama_url,
        running_sim(SimConfig(format="openai")) as openai_url,
    ):
        models = ("llama3.2:latest", "all-minilm:latest")
        backends = (
            BackendView(id="ollama", base_url=ollama_url, models=models, models_known=True),
            BackendView(
                id="openai", base_url=openai_url, api_format="OpenAI", models=models, models_known=True
            ),
        )
        frontends = (
            FrontendView(id="o", hostname="ollama.test", backends=("ollama",), allow_model_management=True),
            FrontendView(id="a", hostname="openai.test", backends=("openai",), allow_model_management=True),
        )
        revision = dp.app.state.revision + 1
        await writer.publish(SnapshotContent(frontends=frontends, backends=backends), revision)
        await dp.wait_revision(revision)
        yield dp


async def _exchange(
    url: str, method: str, path: str, host: str, extra: list[tuple[str, str]], body: bytes
) -> int:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
        lines += [f"{name}: {value}" for name, value in extra if name not in ("content-length", "host")]
        lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
        writer.write("\r\n".join(lines).encode("latin-1") + body)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), DEADLINE)
        await asyncio.wait_for(reader.read(), DEADLINE)  # the whole answer, streams included
    finally:
        writer.close()
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    return int(status_line.split()[1])


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(endpoint=st.sampled_from(ENDPOINTS), host=hosts, extra=headers, body=bodies)
async def test_no_client_input_gets_a_server_error_or_a_hang(
    fuzz_target: RunningDataPlane,
    endpoint: tuple[str, str],
    host: str,
    extra: list[tuple[str, str]],
    body: bytes,
) -> None:
    method, path = endpoint
    status = await _exchange(fuzz_target.url, method, path, host, extra, body)
    if path in MEANT.get(status, ()):
        return
    assert status < 500, f"{method} {path} Host={host!r} headers={extra!r} body={body[:300]!r} -> {status}"
