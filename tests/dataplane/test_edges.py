"""What the data plane sends upstream and how it answers the odd cases, over real HTTP.

The backend here is ``recorder``: it shows the exact request the data plane made.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator

import httpx
import pytest

from shared.snapshot import BackendView, FrontendView, SnapshotContent
from tests.dataplane.harness import RunningDataPlane, SnapshotWriter, content, sealed
from tests.dataplane.recorder import Recorder, recorder


@pytest.fixture
async def rec() -> AsyncIterator[Recorder]:
    async with recorder() as r:
        yield r


async def _publish(
    writer: SnapshotWriter, dp: RunningDataPlane, snapshot: SnapshotContent, revision: int = 1
) -> None:
    await writer.publish(snapshot, revision)
    await dp.wait_revision(revision)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("published", ["sealed", "clear"])  # clear: as control planes before sealing
async def test_upstream_request_carries_backend_settings_and_forwarding_headers(
    rec: Recorder, dp: RunningDataPlane, writer: SnapshotWriter, published: str
) -> None:
    backend = BackendView(
        id="rec",
        base_url=rec.url,
        querystring="api-version=2",
        headers={"X-Team": "blue"},
        bearer_token="backend-secret",
    )
    if published == "sealed":
        backend = sealed(backend)
    frontend = FrontendView(id="f", hostname="*", backends=("rec",))
    await _publish(writer, dp, SnapshotContent(frontends=(frontend,), backends=(backend,)))
    body = b'{"model":"echo",  "prompt":"caf\xc3\xa9",\n "stream":false, "extra":{"kept":[1,2.50]}}'
    async with httpx.AsyncClient() as client:
        resp = await client.post(
            dp.url + "/api/generate?trace=1",
            content=body,
            headers={
                "Host": "lb.example.com:43411",
                "Authorization": "Bearer client-secret",
                "X-Forwarded-For": "203.0.113.9",
                "X-Team": "red",
                "Content-Type": "application/json",
                "User-Agent": "ollama-python/test",
            },
        )
    assert resp.status_code == 200, resp.text
    seen = rec.seen[-1]
    assert seen.body == body  # byte for byte: never re-encoded
    assert seen.headers["Host"] == rec.url.removeprefix("http://")
    assert seen.headers["Authorization"] == "Bearer backend-secret"
    assert seen.headers["X-Team"] == "blue"
    assert [k for k, _ in seen.raw_headers].count("X-Team") == 1
    assert seen.headers["X-Forwarded-For"] == "203.0.113.9, 127.0.0.1"
    assert seen.headers["X-OllamaFlow-Request"] == resp.headers["x-ollamaflow-request"]
    assert seen.headers["User-Agent"] == "ollama-python/test"
    assert seen.query == "trace=1&api-version=2"
    assert resp.headers["x-ollamaflow-backend"] == "rec"
    assert "client-secret" not in json.dumps(seen.headers)


async def test_client_authorization_never_reaches_a_backend_without_a_token(
    rec: Recorder, dp: RunningDataPlane, writer: SnapshotWriter
) -> None:
    await _publish(writer, dp, content({"rec": rec.url}))
    async with httpx.AsyncClient() as client:
        await client.post(dp.url + "/api/chat", json={"model": "echo"}, headers={"Authorization": "Bearer x"})
    assert "Authorization" not in rec.seen[-1].headers
    assert rec.seen[-1].headers["X-Forwarded-For"] == "127.0.0.1"


async def test_backend_error_status_and_body_pass_through(
    rec: Recorder, dp: RunningDataPlane, writer: SnapshotWriter
) -> None:
    await _publish(writer, dp, content({"rec": rec.url}))
    async with httpx.AsyncClient() as client:
        resp = await client.post(dp.url + "/api/chat", json={"model": "teapot"})
    assert resp.status_code == 418
    assert resp.json() == {"error": "short and stout"}
    assert resp.headers["x-ollamaflow-backend"] == "rec"


async def test_upstream_down_is_a_502_in_ollama_shape(dp: RunningDataPlane, writer: SnapshotWriter) -> None:
    await _publish(writer, dp, content({"gone": f"http://127.0.0.1:{_closed_port()}"}))
    async with httpx.AsyncClient() as client:
        resp = await client.post(dp.url + "/api/chat", json={"model": "m"})
    assert resp.status_code == 502
    assert set(resp.json()) == {"error"}
    assert "gone" in resp.json()["error"]
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.headers["x-ollamaflow-request"]


async def test_upstream_error_details_stay_in_the_log(
    dp: RunningDataPlane, writer: SnapshotWriter, caplog: pytest.LogCaptureFixture
) -> None:
    """The client is told which backend and its request id; the OS error (address, errno) is logged."""
    port = _closed_port()
    await _publish(writer, dp, content({"gone": f"http://127.0.0.1:{port}"}))
    async with httpx.AsyncClient() as client:
        for path, body in (
            ("/api/chat", {"model": "m"}),
            ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "x"}]}),
        ):
            resp = await client.post(dp.url + path, json=body)
            assert resp.status_code == 502
            error = resp.json()["error"]
            message = error["message"] if isinstance(error, dict) else error
            request_id = resp.headers["x-ollamaflow-request"]
            assert message == f"cannot connect to backend gone (request {request_id})"
            logged = [r.getMessage() for r in caplog.records if request_id in r.getMessage()]
            assert logged and str(port) in logged[0], logged


async def test_a_refused_connection_fails_over_to_the_next_backend(
    rec: Recorder, dp: RunningDataPlane, writer: SnapshotWriter
) -> None:
    await _publish(writer, dp, content({"a-gone": f"http://127.0.0.1:{_closed_port()}", "b-rec": rec.url}))
    async with httpx.AsyncClient() as client:
        for _ in range(4):
            resp = await client.post(dp.url + "/api/chat", json={"model": "echo"})
            assert resp.status_code == 200
            assert resp.headers["x-ollamaflow-backend"] == "b-rec"


async def test_no_failover_when_the_frontend_forbids_retries(
    rec: Recorder, dp: RunningDataPlane, writer: SnapshotWriter
) -> None:
    backends = {"a-gone": f"http://127.0.0.1:{_closed_port()}", "b-rec": rec.url}
    frontend = FrontendView(id="f", hostname="*", backends=tuple(backends), allow_retries=False)
    await _publish(writer, dp, content(backends, [frontend]))
    async with httpx.AsyncClient() as client:
        statuses = [
            (await client.post(dp.url + "/api/chat", json={"model": "echo"})).status_code for _ in range(4)
        ]
    # The refused request is not retried; the refusal ejects the backend, so the rest go to b-rec.
    assert sorted(statuses) == [200, 200, 200, 502]


async def test_no_answer_within_the_frontend_timeout_is_a_504(
    rec: Recorder, dp: RunningDataPlane, writer: SnapshotWriter
) -> None:
    frontend = FrontendView(id="f", hostname="*", backends=("rec",), timeout_ms=300)
    await _publish(writer, dp, content({"rec": rec.url}, [frontend]))
    async with httpx.AsyncClient() as client:
        resp = await client.post(dp.url + "/api/chat", json={"model": "slow"})
    assert resp.status_code == 504
    assert "did not answer within 0.3s" in resp.json()["error"]


async def test_a_stream_that_breaks_off_ends_with_an_ollama_error_line(
    rec: Recorder, dp: RunningDataPlane, writer: SnapshotWriter
) -> None:
    await _publish(writer, dp, content({"rec": rec.url}))
    async with httpx.AsyncClient() as client:
        resp = await client.post(dp.url + "/api/chat", json={"model": "break"})
    assert resp.status_code == 200
    lines = resp.content.split(b"\n")
    assert lines[0] == b'{"done":false}'
    assert lines[-1] == b""
    assert json.loads(lines[-2])["error"].startswith("backend rec")


async def test_body_over_the_frontend_limit_is_a_413(
    rec: Recorder, dp: RunningDataPlane, writer: SnapshotWriter
) -> None:
    frontend = FrontendView(id="f", hostname="*", backends=("rec",), max_request_body_size=100)
    await _publish(writer, dp, content({"rec": rec.url}, [frontend]))
    big = {"model": "echo", "prompt": "x" * 200}

    async def chunked() -> AsyncIterator[bytes]:
        payload = json.dumps(big).encode()
        for i in range(0, len(payload), 50):
            yield payload[i : i + 50]

    async with httpx.AsyncClient() as client:
        declared = await client.post(dp.url + "/api/chat", json=big)
        streamed = await client.post(dp.url + "/api/chat", content=chunked())
        small = await client.post(dp.url + "/api/chat", json={"model": "echo"})
    for resp in (declared, streamed):
        assert resp.status_code == 413
        assert "100 bytes" in resp.json()["error"]
    assert small.status_code == 200
    assert len(rec.seen) == 1


async def test_refusals_in_ollama_shape(rec: Recorder, dp: RunningDataPlane, writer: SnapshotWriter) -> None:
    frontends = [
        FrontendView(id="chat", hostname="chat.example", backends=("rec",), allow_embeddings=False),
        FrontendView(id="embed", hostname="embed.example", backends=("rec",), allow_completions=False),
    ]
    await _publish(writer, dp, content({"rec": rec.url}, frontends))
    async with httpx.AsyncClient(base_url=dp.url) as client:
        cases = [
            (await client.post("/api/embed", json={"model": "echo"}, headers={"Host": "chat.example"}), 403),
            (await client.post("/api/chat", json={"model": "echo"}, headers={"Host": "embed.example"}), 403),
            (await client.post("/api/chat", json={"model": "echo"}, headers={"Host": "other.example"}), 404),
            (await client.post("/api/nothing", json={}), 404),
            (await client.get("/api/chat"), 405),
            (await client.post("/api/chat", content=b"", headers={"Host": "chat.example"}), 400),
            (await client.post("/api/chat", content=b"{oops", headers={"Host": "chat.example"}), 400),
        ]
        ok = await client.post("/api/chat", json={"model": "echo"}, headers={"Host": "Chat.Example:43411"})
    for resp, status in cases:
        assert resp.status_code == status, resp.text
        assert list(resp.json()) == ["error"] and resp.json()["error"]
    assert ok.status_code == 200
    assert len(rec.seen) == 1


async def test_local_answers_need_no_snapshot(dp: RunningDataPlane) -> None:
    async with httpx.AsyncClient(base_url=dp.url) as client:
        root = await client.get("/")
        head = await client.head("/")
        version = await client.get("/api/version")
        version_head = await client.head("/api/version")
        health = await client.get("/healthz")
        ready = await client.get("/readyz")
        proxied = await client.post("/api/chat", json={"model": "m"})
    assert (root.status_code, root.text) == (200, "Ollama is running")
    assert root.headers["content-type"] == "text/plain; charset=utf-8"
    assert (head.status_code, head.content) == (200, b"")
    assert version.json() == {"version": "0.33.0"}
    assert (version_head.status_code, version_head.content) == (200, b"")
    assert health.json()["status"] == "ok"
    assert ready.status_code == 503 and ready.json()["status"] == "starting"
    assert proxied.status_code == 404 and "error" in proxied.json()
