"""Wire details a proxy depends on, checked with a raw HTTP client."""

from __future__ import annotations

import json

import httpx
import pytest

from ollamaflow.sim import SimConfig, running_sim


@pytest.fixture
async def http(ollama_url: str):  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient(base_url=ollama_url) as client:
        yield client


async def test_root_version_and_head(http: httpx.AsyncClient) -> None:
    root = await http.get("/")
    assert root.text == "Ollama is running" and root.headers["content-type"] == "text/plain; charset=utf-8"
    for path in ("/", "/api/version", "/api/tags"):
        get, head = await http.get(path), await http.head(path)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == get.headers["content-length"] == str(len(get.content))
    assert (await http.get("/api/version")).json() == {"version": "0.33.0"}


async def test_unknown_paths_methods_and_trailing_slashes(http: httpx.AsyncClient) -> None:
    missing = await http.get("/api/nothing")
    assert missing.status_code == 404 and missing.text == "404 page not found"
    wrong = await http.get("/api/chat")
    assert wrong.status_code == 405 and wrong.text == "405 method not allowed"
    assert (await http.head("/api/ps")).status_code == 405
    redirected = await http.get("/api/tags/")
    assert redirected.status_code == 301 and redirected.headers["location"] == "/api/tags"
    assert (await http.post("/api/chat/", json={})).status_code == 307


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/api/chat", b"", 400, "missing request body"),
        ("/api/generate", b"  ", 400, "missing request body"),
        ("/api/chat", b'{"model": "llama3.2", "messages": [', 400, None),
        ("/api/chat", b'{"model": 5}', 400, None),
        ("/api/chat", b'{"messages": []}', 400, "model is required"),
        ("/api/show", b"{}", 400, "model is required"),
        ("/api/pull", b'{"model": "bad name"}', 400, "invalid model name"),
        ("/api/embed", b'{"model": "all-minilm", "input": [1, 2]}', 400, "invalid input type"),
        (
            "/api/chat",
            b'{"model": "llama3.2", "messages": [], "keep_alive": "-1"}',
            400,
            'time: missing unit in duration "-1"',
        ),
        ("/api/generate", b'{"model": "llama3.2", "prompt": "x", "raw": true, "system": "s"}', 400, None),
        ("/api/generate", b'{"model": "llama3.2", "prompt": "x", "images": ["data:,x"]}', 400, None),
        ("/api/generate", b'{"model": "nope", "prompt": "x"}', 404, "model 'nope' not found"),
        (
            "/api/embeddings",
            b'{"model": "nope", "prompt": "x"}',
            404,
            'model "nope" not found, try pulling it first',
        ),
    ],
)
async def test_bad_input_gets_ollamas_errors(
    http: httpx.AsyncClient, path: str, body: bytes, status: int, message: str | None
) -> None:
    reply = await http.post(path, content=body)
    assert reply.status_code == status
    assert reply.headers["content-type"] == "application/json; charset=utf-8"
    error = reply.json()["error"]
    assert error and (message is None or error == message)


async def test_streams_are_ndjson(http: httpx.AsyncClient) -> None:
    reply = await http.post(
        "/api/chat", json={"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert reply.headers["content-type"] == "application/x-ndjson" and "content-length" not in reply.headers
    lines = reply.content.split(b"\n")
    assert lines[-1] == b"" and all(lines[:-1])
    parsed = [json.loads(line) for line in lines[:-1]]
    assert all(line["created_at"].endswith("Z") for line in parsed) and parsed[-1]["done"] is True


async def test_load_and_unload_replies_are_single_objects(http: httpx.AsyncClient) -> None:
    load = await http.post("/api/chat", json={"model": "llama3.2", "messages": []})
    assert load.headers["content-type"].startswith("application/json")
    assert load.json()["done_reason"] == "load" and load.json()["message"] == {
        "role": "assistant",
        "content": "",
    }
    assert [m["name"] for m in (await http.get("/api/ps")).json()["models"]] == ["llama3.2:latest"]
    unload = await http.post("/api/generate", json={"model": "llama3.2", "keep_alive": 0})
    assert unload.json()["done_reason"] == "unload" and (await http.get("/api/ps")).json() == {"models": []}
    empty = await http.post("/api/embed", json={"model": "all-minilm", "input": []})
    assert empty.json() == {"model": "all-minilm", "embeddings": []}


async def test_pull_not_streamed_and_delete_body(http: httpx.AsyncClient) -> None:
    assert (await http.post("/api/pull", json={"name": "gemma3", "stream": False})).json() == {
        "status": "success"
    }
    failed = await http.post("/api/pull", json={"model": "missing", "stream": False})
    assert failed.status_code == 500 and "does not exist" in failed.json()["error"]
    streamed = await http.post("/api/pull", json={"model": "missing"})
    assert streamed.status_code == 200 and json.loads(streamed.text.splitlines()[-1]) == {
        "error": "pull model manifest: file does not exist"
    }
    deleted = await http.request("DELETE", "/api/delete", json={"model": "gemma3"})
    assert deleted.status_code == 200 and deleted.content == b""


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("localhost:11434", 200),
        ("127.0.0.1", 200),
        ("[::1]:80", 200),
        ("10.1.2.3", 200),
        ("box.internal", 200),
        ("evil.example.com", 403),
        ("8.8.8.8:11434", 403),
    ],
)
async def test_ollama_on_loopback_checks_the_host_header(
    http: httpx.AsyncClient, host: str, status: int
) -> None:
    reply = await http.get("/api/version", headers={"host": host})
    assert reply.status_code == status
    if status == 403:
        assert reply.content == b""


async def test_openai_mode_serves_only_v1() -> None:
    async with running_sim(SimConfig(format="openai")) as url, httpx.AsyncClient(base_url=url) as http:
        for path in ("/api/tags", "/api/version", "/"):
            missing = await http.get(path)
            assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
        no_model = await http.post(
            "/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}
        )
        assert (
            no_model.status_code == 400
            and no_model.json()["error"]["message"] == "you must provide a model parameter"
        )
        bad_format = await http.post(
            "/v1/embeddings", json={"model": "all-minilm:latest", "input": "x", "encoding_format": "hex"}
        )
        assert bad_format.status_code == 400 and bad_format.json()["error"]["param"] == "encoding_format"
        stream = await http.post(
            "/v1/chat/completions",
            json={"model": "llama3.2:latest", "messages": [{"role": "user", "content": "x"}], "stream": True},
            headers={"host": "anything.example.com"},  # OpenAI-compatible servers do not check Host
        )
        assert stream.headers["content-type"].startswith("text/event-stream") and stream.text.endswith(
            "data: [DONE]\n\n"
        )
        assert (await http.get("/v1/chat/completions")).status_code == 405


async def test_ollama_mode_api_key() -> None:
    async with running_sim(SimConfig(api_key="k")) as url, httpx.AsyncClient(base_url=url) as http:
        denied = await http.get("/api/tags")
        assert denied.status_code == 401 and denied.json() == {"error": "unauthorized"}
        assert (await http.get("/api/tags", headers={"authorization": "Bearer k"})).status_code == 200
        assert (await http.get("/_sim/stats")).status_code == 200  # control routes stay open
