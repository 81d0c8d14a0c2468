"""The admin API as OllamaFlow's web UI (a Next.js app on another origin) uses it from a browser: the
unauthenticated probe of ``/``, preflights without a token, and token-bearing calls whose answers
carry the CORS headers, for allowed and other origins, and with CORS off (the default)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import httpx
import pytest

from controlplane.settings import Settings, load_settings
from shared.errors import ConfigError
from tests.controlplane.conftest import TOKEN
from tests.controlplane.harness import RunningControlPlane, running_controlplane

UI = "http://localhost:3000"
OTHER = "http://evil.example"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _preflight(origin: str, method: str = "PUT") -> dict[str, str]:
    """What a browser sends before a PUT with a token and a JSON body."""
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization,content-type",
    }


@pytest.fixture(scope="module")
def ui_plane(controlplane: RunningControlPlane) -> Iterator[RunningControlPlane]:
    """A second control plane (same database and bus as the module's) that allows the UI's origins."""
    settings = dataclasses.replace(controlplane.plane.settings, cors_origins=(UI, "http://127.0.0.1:3000"))
    with running_controlplane(settings) as running:
        yield running


async def test_the_uis_probe_sign_in_and_edits_work_from_an_allowed_origin(
    ui_plane: RunningControlPlane, clean_database_url: str
) -> None:
    async with httpx.AsyncClient(base_url=ui_plane.url, timeout=10) as browser:
        # The probe: no token, a non-empty 2xx body the page can read.
        probe = await browser.get("/", headers={"Origin": UI})
        assert probe.status_code == 200 and probe.content
        assert probe.headers["access-control-allow-origin"] == UI
        assert probe.json()["admin_api"] == "/v1.0" and probe.json()["version"]
        # Preflights pass without a token, for every method the UI uses.
        for method in ("GET", "PUT", "DELETE", "PATCH"):
            answer = await browser.options("/v1.0/frontends/main", headers=_preflight(UI, method))
            assert answer.status_code == 204, (method, answer.text)
            assert answer.headers["access-control-allow-origin"] == UI
            assert method in answer.headers["access-control-allow-methods"]
            allowed = answer.headers["access-control-allow-headers"].lower()
            assert "authorization" in allowed and "content-type" in allowed
        # The calls themselves: token and JSON, the answers readable by the page.
        json_headers = {"Origin": UI, "Content-Type": "application/json", **AUTH}
        created = await browser.put(
            "/v1.0/backends", headers=json_headers, json={"Identifier": "gpu1", "Hostname": "10.0.0.5"}
        )
        assert created.status_code == 201 and created.headers["access-control-allow-origin"] == UI
        body = {"Identifier": "main", "Hostname": "*", "Backends": ["gpu1"]}
        assert (await browser.put("/v1.0/frontends", headers=json_headers, json=body)).status_code == 201
        listed = await browser.get("/v1.0/frontends", headers={"Origin": UI, **AUTH})
        assert listed.status_code == 200 and [f["Identifier"] for f in listed.json()] == ["main"]
        assert listed.headers["access-control-allow-origin"] == UI
        assert "X-OllamaFlow-Publish-Error" in listed.headers["access-control-expose-headers"]
        health = await browser.get("/v1.0/backends/health", headers={"Origin": UI, **AUTH})
        assert health.headers["access-control-allow-origin"] == UI
        deleted = await browser.delete("/v1.0/frontends/main", headers={"Origin": UI, **AUTH})
        assert deleted.status_code == 204 and deleted.headers["access-control-allow-origin"] == UI
        # A preflight is no way around the token: the call itself still needs one.
        refused = await browser.get("/v1.0/frontends", headers={"Origin": UI})
        assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == UI


async def test_another_origin_gets_no_cors_headers(ui_plane: RunningControlPlane) -> None:
    async with httpx.AsyncClient(base_url=ui_plane.url, timeout=10) as browser:
        answer = await browser.options("/v1.0/frontends", headers=_preflight(OTHER))
        assert answer.status_code == 400 and "access-control-allow-origin" not in answer.headers
        probe = await browser.get("/", headers={"Origin": OTHER})
        assert probe.status_code == 200 and "access-control-allow-origin" not in probe.headers
        listed = await browser.get("/v1.0/frontends", headers={"Origin": OTHER, **AUTH})
        assert listed.status_code == 200 and "access-control-allow-origin" not in listed.headers


async def test_without_origins_there_is_no_cors_but_the_probe_answers(anonymous: httpx.AsyncClient) -> None:
    probe = await anonymous.get("/", headers={"Origin": UI})
    assert probe.status_code == 200 and probe.json()["service"] == "OllamaFlow control plane"
    assert "access-control-allow-origin" not in probe.headers
    assert (await anonymous.head("/")).status_code == 200
    answer = await anonymous.options("/v1.0/frontends", headers=_preflight(UI))
    assert "access-control-allow-origin" not in answer.headers
    assert answer.status_code != 204


def test_origins_are_read_from_the_environment_and_checked() -> None:
    base = {"OLLAMAFLOW_DATABASE_URL": "postgresql://u@h/d", "OLLAMAFLOW_ADMIN_TOKENS": "t"}
    assert load_settings(env=base).cors_origins == ()
    env = base | {"OLLAMAFLOW_CORS_ORIGINS": " http://localhost:3000, HTTPS://UI.example.com:8443 "}
    settings: Settings = load_settings(env=env)
    assert settings.cors_origins == ("http://localhost:3000", "https://ui.example.com:8443")
    assert load_settings(env=base | {"OLLAMAFLOW_CORS_ORIGINS": "none"}).cors_origins == ()
    assert load_settings(env=base | {"OLLAMAFLOW_CORS_ORIGINS": "*"}).cors_origins == ("*",)
    for bad in ("http://localhost:3000/", "localhost:3000", "http://x/path", "http://x:70000"):
        with pytest.raises(ConfigError, match="OLLAMAFLOW_CORS_ORIGINS"):
            load_settings(env=base | {"OLLAMAFLOW_CORS_ORIGINS": bad})
