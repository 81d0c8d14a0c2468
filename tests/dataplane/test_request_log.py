"""The access log as tools read it (JSON lines from a real data plane), and the request id a client
brings (X-Request-ID or traceparent) reaching the backend and coming back."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import replace

import httpx
import ollama
import pytest

from dataplane.settings import DataPlaneSettings
from ollamaflow.sim import running_sim
from shared.logformat import JsonFormatter
from shared.snapshot import BackendView
from tests.dataplane.harness import (
    RunningDataPlane,
    SnapshotWriter,
    eventually,
    running_dataplane,
    serve_frontend,
)
from tests.dataplane.recorder import recorder

MESSAGES = [{"role": "user", "content": "Hello."}]


class _Lines(logging.Handler):
    """Formats each record of the access logger as JSON, as a JSON-logging data plane writes it."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.extend(self.format(record).split("\n"))  # the access log hands over batches


@pytest.fixture
def access_lines() -> Iterator[list[str]]:
    handler = _Lines()
    logger = logging.getLogger("ollamaflow.access")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


async def test_each_request_gets_one_json_access_line(
    dp_settings: DataPlaneSettings, writer: SnapshotWriter, access_lines: list[str]
) -> None:
    settings = replace(dp_settings, log_format="json")
    async with running_sim(tokens_per_second=500) as sim, running_dataplane(settings) as dp:
        await serve_frontend(writer, dp, [BackendView(id="sim", base_url=sim)])
        client = ollama.AsyncClient(host=dp.url, headers={"X-Request-ID": "req-42"})
        parts = [p async for p in await client.chat(model="llama3.2", messages=MESSAGES, stream=True)]
        async with httpx.AsyncClient() as http:
            await http.post(dp.url + "/v1/chat/completions", content=b"{not json")
        await eventually(lambda: len(access_lines) == 2, what="two access lines")
    first, second = (json.loads(line) for line in access_lines)
    assert set(first) >= {"time", "level", "logger", "message"}
    assert first["logger"] == "ollamaflow.access"
    assert first["message"] == "POST /api/chat 200"
    assert {k: first[k] for k in ("request_id", "frontend", "backend", "model", "endpoint")} == {
        "request_id": "req-42",
        "frontend": "f",
        "backend": "sim",
        "model": "llama3.2",
        "endpoint": "/api/chat",
    }
    assert (first["client_format"], first["status"], first["relay"]) == ("ollama", 200, "passthrough")
    assert first["output_tokens"] == parts[-1].eval_count and first["input_tokens"] > 0
    assert first["bytes"] > 0 and 0 < first["ttfb_ms"] <= first["duration_ms"]
    assert (first["retries"], first["queue_ms"], first["client_gone"]) == (0, None, False)
    # A body no backend could parse: answered by the data plane, still logged, with nobody serving it.
    assert (second["status"], second["backend"], second["client_format"]) == (400, "none", "openai")
    assert second["input_tokens"] is None and len(second["request_id"]) == 32


async def test_text_access_lines_show_fields_as_key_value(
    dp: RunningDataPlane, writer: SnapshotWriter, access_lines: list[str]
) -> None:
    async with recorder() as rec:
        await serve_frontend(writer, dp, [BackendView(id="rec", base_url=rec.url)])
        async with httpx.AsyncClient() as client:
            await client.post(dp.url + "/api/chat", json={"model": "echo"}, headers={"X-Request-ID": "t-1"})
        await eventually(lambda: len(access_lines) == 1, what="an access line")
    line = access_lines[0]
    assert (
        " INFO ollamaflow.access: POST /api/chat 200 request_id=t-1 frontend=f backend=rec model=echo "
        in line
    )
    assert (
        " ttfb_ms=" in line
        and " input_tokens=- " in line
        and line.endswith(" relay=passthrough client_gone=False")
    )


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        ({"X-Request-ID": "trace-me_01"}, "trace-me_01"),
        (
            {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
            "4bf92f3577b34da6a3ce929d0e0e4736",
        ),
    ],
)
async def test_a_client_request_id_reaches_the_backend_and_comes_back(
    dp: RunningDataPlane, writer: SnapshotWriter, sent: dict[str, str], expected: str
) -> None:
    async with recorder() as rec:
        await serve_frontend(writer, dp, [BackendView(id="rec", base_url=rec.url)])
        async with httpx.AsyncClient() as client:
            response = await client.post(dp.url + "/api/chat", json={"model": "echo"}, headers=sent)
    assert response.headers["x-ollamaflow-request"] == expected
    seen = rec.seen[0].headers
    assert seen["X-OllamaFlow-Request"] == expected
    for name, value in sent.items():  # the client's own header goes on as it was
        assert seen[name] == value


@pytest.mark.parametrize("bad", ["has space", "x" * 129, "semi;colon"])
async def test_a_malformed_request_id_is_ignored_and_not_passed_on(
    dp: RunningDataPlane, writer: SnapshotWriter, bad: str
) -> None:
    async with recorder() as rec:
        await serve_frontend(writer, dp, [BackendView(id="rec", base_url=rec.url)])
        async with httpx.AsyncClient() as client:
            response = await client.post(
                dp.url + "/api/chat", json={"model": "echo"}, headers={"X-Request-ID": bad}
            )
    request_id = response.headers["x-ollamaflow-request"]
    assert request_id != bad and len(request_id) == 32
    assert "X-Request-ID" not in rec.seen[0].headers
    assert rec.seen[0].headers["X-OllamaFlow-Request"] == request_id


async def test_answers_the_proxy_does_not_meter_are_logged_too_but_not_probes(
    dp_settings: DataPlaneSettings, writer: SnapshotWriter, access_lines: list[str]
) -> None:
    settings = replace(dp_settings, log_format="json")
    async with running_sim() as sim, running_dataplane(settings) as dp:
        await serve_frontend(writer, dp, [BackendView(id="sim", base_url=sim)])
        async with httpx.AsyncClient(base_url=dp.url) as client:
            for path in ("/healthz", "/readyz", "/metrics"):
                await client.get(path)
            tags = await client.get("/api/tags", headers={"X-Request-ID": "tags-1"})
            await client.get("/v1/nothing-here")
            await client.get("/api/chat")  # a proxied path, but refused before the proxy: 405
        await eventually(lambda: len(access_lines) == 3, what="three access lines")
    tags_line, missing, refused = (json.loads(line) for line in access_lines)
    assert tags_line["message"] == "GET /api/tags 200"
    assert (tags_line["request_id"], tags_line["bytes"], tags_line["client_format"]) == (
        "tags-1",
        len(tags.content),
        "ollama",
    )
    assert tags_line["backend"] == "none" and tags_line["duration_ms"] >= tags_line["ttfb_ms"] > 0
    assert (missing["message"], missing["status"], missing["request_id"]) == (
        "GET /v1/nothing-here 404",
        404,
        None,
    )
    assert (refused["message"], refused["status"]) == ("GET /api/chat 405", 405)
