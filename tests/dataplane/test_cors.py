"""The data plane as a browser page on another origin calls it (OllamaFlow's UI has an API explorer):
preflights answered without reaching a route, CORS headers on allowed origins' answers, streams
included, nothing for other origins, and nothing at all with CORS off (the default)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator

import httpx
import pytest

from dataplane.settings import DataPlaneSettings, load_settings
from ollamaflow.sim import running_sim
from shared.errors import ConfigError
from shared.snapshot import FrontendView
from tests.dataplane.harness import RunningDataPlane, SnapshotWriter, content, running_dataplane

UI = "http://localhost:3000"
OTHER = "http://evil.example"
CHAT = {"model": "llama3.2", "messages": [{"role": "user", "content": "Hi"}], "stream": True}


def _preflight(origin: str, method: str = "POST", headers: str = "content-type") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


@pytest.fixture
async def ui_dp(dp_settings: DataPlaneSettings) -> AsyncIterator[RunningDataPlane]:
    settings = dataclasses.replace(dp_settings, dataplane_cors_origins=(UI, "http://127.0.0.1:3000"))
    async with running_dataplane(settings) as running:
        yield running


async def _serve_sim(writer: SnapshotWriter, dp: RunningDataPlane, sim: str) -> None:
    frontends = [FrontendView(id="f", hostname="*", backends=("sim",))]
    revision = dp.app.state.revision + 1
    await writer.publish(content({"sim": sim}, frontends), revision)
    await dp.wait_revision(revision)


async def test_an_allowed_origin_gets_preflights_and_readable_answers_streams_included(
    ui_dp: RunningDataPlane, writer: SnapshotWriter
) -> None:
    async with running_sim() as sim, httpx.AsyncClient(base_url=ui_dp.url, timeout=30) as browser:
        await _serve_sim(writer, ui_dp, sim)
        for path, method in (
            ("/api/chat", "POST"),
            ("/v1/chat/completions", "POST"),
            ("/api/delete", "DELETE"),
        ):
            answer = await browser.options(path, headers=_preflight(UI, method, "content-type,authorization"))
            assert answer.status_code == 204, (path, answer.text)
            assert answer.headers["access-control-allow-origin"] == UI
            assert method in answer.headers["access-control-allow-methods"]
            assert answer.headers["access-control-allow-headers"] == "content-type,authorization"
            assert answer.headers["vary"] == "Origin"
        # A streamed chat: the headers go out with the first bytes; every line arrives.
        headers = {"Origin": UI, "Content-Type": "application/json"}
        async with browser.stream("POST", "/api/chat", headers=headers, content=json.dumps(CHAT)) as streamed:
            assert streamed.status_code == 200
            assert streamed.headers["access-control-allow-origin"] == UI
            assert "X-OllamaFlow-Backend" in streamed.headers["access-control-expose-headers"]
            lines = [json.loads(line) async for line in streamed.aiter_lines() if line]
        assert len(lines) > 1 and lines[-1]["done"] is True
        for path in ("/api/tags", "/api/ps", "/"):
            answer = await browser.get(path, headers={"Origin": UI})
            assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == UI
        # A refusal is readable too (model management is off on this frontend).
        refused = await browser.request("DELETE", "/api/delete", headers=headers, json={"model": "x"})
        assert refused.status_code == 403 and refused.headers["access-control-allow-origin"] == UI


async def test_another_origin_gets_a_refused_preflight_and_no_cors_headers(
    ui_dp: RunningDataPlane, writer: SnapshotWriter
) -> None:
    async with running_sim() as sim, httpx.AsyncClient(base_url=ui_dp.url, timeout=30) as browser:
        await _serve_sim(writer, ui_dp, sim)
        answer = await browser.options("/api/chat", headers=_preflight(OTHER))
        assert answer.status_code == 403 and "access-control-allow-origin" not in answer.headers
        served = await browser.post("/api/chat", headers={"Origin": OTHER}, json=CHAT | {"stream": False})
        assert served.status_code == 200 and "access-control-allow-origin" not in served.headers
        # Without Origin (curl, SDKs) nothing changes either; an OPTIONS that is no preflight is routed.
        assert "access-control-allow-origin" not in (await browser.get("/api/tags")).headers
        assert (await browser.options("/api/chat", headers={"Origin": UI})).status_code == 405
        malformed = _preflight(UI, headers="content-type, bad header")
        assert (await browser.options("/api/chat", headers=malformed)).status_code == 400


async def test_without_origins_there_is_no_cors(dp: RunningDataPlane, writer: SnapshotWriter) -> None:
    assert dp.app.cors is None
    async with running_sim() as sim, httpx.AsyncClient(base_url=dp.url, timeout=30) as browser:
        await _serve_sim(writer, dp, sim)
        answer = await browser.options("/api/chat", headers=_preflight(UI))
        assert answer.status_code == 405 and "access-control-allow-origin" not in answer.headers
        served = await browser.get("/api/tags", headers={"Origin": UI})
        assert served.status_code == 200 and "access-control-allow-origin" not in served.headers


def test_origins_are_read_from_the_environment_and_checked() -> None:
    assert load_settings(environ={}).dataplane_cors_origins == ()
    env = {"OLLAMAFLOW_DATAPLANE_CORS_ORIGINS": "http://localhost:3000,*"}
    assert load_settings(environ=env).dataplane_cors_origins == ("http://localhost:3000", "*")
    with pytest.raises(ConfigError, match="dataplane_cors_origins"):
        load_settings(environ={"OLLAMAFLOW_DATAPLANE_CORS_ORIGINS": "localhost:3000"})
