"""``/v1.0/backends`` over real HTTP against a real database, the write-only bearer token included."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime

import httpx
import pytest

from tests.support.secrets import stored_backend_secrets

pytestmark = pytest.mark.usefixtures("controlplane")

SECRET = "sk-very-secret-token-0123456789"


async def test_create_read_list_and_defaults(admin: httpx.AsyncClient) -> None:
    resp = await admin.put("/v1.0/backends", json={"Identifier": "b1", "Name": "one", "Hostname": "10.0.0.5"})
    assert resp.status_code == 201, resp.text
    created = resp.json()
    # OllamaFlow's code defaults (Port 8000, not the 11434 its docs claim).
    assert (created["Port"], created["Ssl"], created["ApiFormat"]) == (8000, False, "Ollama")
    assert (created["UnhealthyThreshold"], created["HealthyThreshold"]) == (2, 2)
    assert (created["HealthCheckMethod"], created["HealthCheckUrl"]) == ("GET", "/")
    # None: the control plane's OLLAMAFLOW_HEALTH_INTERVAL / _TIMEOUT apply.
    assert (created["HealthCheckIntervalMs"], created["HealthCheckTimeoutMs"]) == (None, None)
    # 0: unlimited (OllamaFlow's 4 and 10 were stored, never enforced; enforcing them throttled at once).
    assert (created["MaxParallelRequests"], created["RateLimitRequestsThreshold"]) == (0, 0)
    assert (created["Querystring"], created["Headers"], created["Labels"]) == (None, {}, [])
    assert created["UrlPrefix"] == "http://10.0.0.5:8000"
    assert created["HasBearerToken"] is False
    assert (await admin.get("/v1.0/backends/b1")).json() == created
    assert (await admin.get("/v1.0/backends")).json() == [created]
    assert (await admin.head("/v1.0/backends/b1")).status_code == 200
    assert (await admin.head("/v1.0/backends/b2")).status_code == 404


async def test_zero_limits_mean_unlimited_and_limits_are_set_and_lifted(admin: httpx.AsyncClient) -> None:
    limited = {"Identifier": "b1", "MaxParallelRequests": 8, "RateLimitRequestsThreshold": 50}
    created = (await admin.put("/v1.0/backends", json=limited)).json()
    assert (created["MaxParallelRequests"], created["RateLimitRequestsThreshold"]) == (8, 50)
    lifted = {"MaxParallelRequests": 0, "RateLimitRequestsThreshold": 0}
    resp = await admin.patch("/v1.0/backends/b1", json=lifted)
    assert resp.status_code == 200, resp.text
    assert (resp.json()["MaxParallelRequests"], resp.json()["RateLimitRequestsThreshold"]) == (0, 0)
    schema = (await admin.get("/schema/openapi.json")).json()
    described = json.dumps(schema)
    assert "0: unlimited" in described


async def test_probe_interval_and_timeout_per_backend(admin: httpx.AsyncClient) -> None:
    body = {"Identifier": "b1", "HealthCheckIntervalMs": 1500, "HealthCheckTimeoutMs": 700}
    created = (await admin.put("/v1.0/backends", json=body)).json()
    assert (created["HealthCheckIntervalMs"], created["HealthCheckTimeoutMs"]) == (1500, 700)
    patched = (await admin.patch("/v1.0/backends/b1", json={"HealthCheckTimeoutMs": None})).json()
    assert (patched["HealthCheckIntervalMs"], patched["HealthCheckTimeoutMs"]) == (1500, None)


async def test_url_prefix_follows_ssl_and_ipv6(admin: httpx.AsyncClient) -> None:
    resp = await admin.put(
        "/v1.0/backends", json={"Identifier": "v6", "Hostname": "::1", "Port": 443, "Ssl": True}
    )
    assert resp.json()["UrlPrefix"] == "https://[::1]:443"


async def test_status_codes(admin: httpx.AsyncClient) -> None:
    assert (await admin.put("/v1.0/backends", json={"Identifier": "b1"})).status_code == 201
    assert (await admin.put("/v1.0/backends", json={"Identifier": "b1"})).status_code == 409
    assert (await admin.put("/v1.0/backends", json={"Port": 1})).status_code == 400
    assert (await admin.put("/v1.0/backends/nope", json={})).status_code == 404
    assert (await admin.patch("/v1.0/backends/nope", json={})).status_code == 404
    assert (await admin.delete("/v1.0/backends/nope")).status_code == 404
    assert (await admin.get("/v1.0/backends/nope")).status_code == 404
    assert (await admin.delete("/v1.0/backends/b1")).status_code == 204
    assert (await admin.get("/v1.0/backends/b1")).status_code == 404


async def test_replace_resets_omitted_fields_and_patch_keeps_them(admin: httpx.AsyncClient) -> None:
    await admin.put(
        "/v1.0/backends",
        json={"Identifier": "b1", "Hostname": "h1", "Port": 11434, "Labels": ["eu"], "Headers": {"X-A": "1"}},
    )
    patched = (await admin.patch("/v1.0/backends/b1", json={"ApiFormat": "OpenAI"})).json()
    assert (patched["Hostname"], patched["Port"], patched["Labels"], patched["ApiFormat"]) == (
        "h1",
        11434,
        ["eu"],
        "OpenAI",
    )
    assert patched["Headers"] == {"X-A": "<redacted>"}  # values are write-only
    replaced = (await admin.put("/v1.0/backends/b1", json={"Hostname": "h2"})).json()
    assert (replaced["Hostname"], replaced["Port"], replaced["Labels"], replaced["ApiFormat"]) == (
        "h2",
        8000,
        [],
        "Ollama",
    )
    assert replaced["CreatedUtc"] == patched["CreatedUtc"]


async def test_bearer_token_is_write_only(admin: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    responses = [
        await admin.put("/v1.0/backends", json={"Identifier": "b1", "BearerToken": SECRET}),
        await admin.get("/v1.0/backends/b1"),
        await admin.get("/v1.0/backends"),
        await admin.patch("/v1.0/backends/b1", json={"Port": 9}),
        # A full replace that omits the token (e.g. from a UI that never saw it) keeps it.
        await admin.put("/v1.0/backends/b1", json={"Hostname": "h", "Port": 10}),
    ]
    for resp in responses:
        assert resp.status_code in (200, 201), resp.text
        assert SECRET not in resp.text
        assert "BearerToken" not in resp.json() if isinstance(resp.json(), dict) else True
    assert responses[0].json()["HasBearerToken"] is True
    assert responses[-1].json()["HasBearerToken"] is True
    assert SECRET not in caplog.text


@pytest.mark.parametrize("cleared", [None, ""])
async def test_bearer_token_is_cleared_by_null_or_empty(
    admin: httpx.AsyncClient, cleared: str | None
) -> None:
    await admin.put("/v1.0/backends", json={"Identifier": "b1", "BearerToken": SECRET})
    assert (await admin.put("/v1.0/backends/b1", json={"BearerToken": cleared})).json()[
        "HasBearerToken"
    ] is False
    await admin.patch("/v1.0/backends/b1", json={"BearerToken": SECRET})
    assert (await admin.get("/v1.0/backends/b1")).json()["HasBearerToken"] is True
    assert (await admin.patch("/v1.0/backends/b1", json={"BearerToken": cleared})).json()[
        "HasBearerToken"
    ] is False


async def test_a_backend_in_use_cannot_be_deleted(admin: httpx.AsyncClient) -> None:
    await admin.put("/v1.0/backends", json={"Identifier": "b1"})
    await admin.put("/v1.0/backends", json={"Identifier": "b2"})
    await admin.put("/v1.0/frontends", json={"Identifier": "front-a", "Backends": ["b2", "b1"]})
    await admin.put(
        "/v1.0/frontends", json={"Identifier": "front-b", "Hostname": "b.test", "Backends": ["b1"]}
    )

    resp = await admin.delete("/v1.0/backends/b1")
    assert resp.status_code == 409
    body = resp.json()
    assert (body["Error"], body["StatusCode"]) == ("InUse", 409)
    assert "front-a" in body["Description"] and "front-b" in body["Description"]
    assert (await admin.head("/v1.0/backends/b1")).status_code == 200

    await admin.patch("/v1.0/frontends/front-a", json={"Backends": ["b2"]})
    await admin.delete("/v1.0/frontends/front-b")
    assert (await admin.delete("/v1.0/backends/b1")).status_code == 204


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("Port", 65536),
        ("Port", -1),
        ("UnhealthyThreshold", 0),
        ("HealthyThreshold", 0),
        ("MaxParallelRequests", -1),
        ("RateLimitRequestsThreshold", -1),
        ("MaxParallelRequests", 2**31),
        ("HealthCheckMethod", "POST"),
        ("HealthCheckMethod", "get"),
        ("ApiFormat", "Unknown"),
        ("Hostname", ""),
        ("Hostname", "http://host"),
        ("HealthCheckUrl", "health"),
        ("HealthCheckIntervalMs", 50),
        ("HealthCheckTimeoutMs", "1000"),
        ("Headers", {"Bad Name": "x"}),
        ("Headers", {"X-Ok": "line\r\nbreak"}),
        ("Labels", "eu"),
        ("Ssl", "true"),
        ("BearerToken", 42),
    ],
)
async def test_invalid_values_are_400_naming_the_field(
    admin: httpx.AsyncClient, field: str, value: object
) -> None:
    resp = await admin.put("/v1.0/backends", json={"Identifier": "b1", field: value})
    assert resp.status_code == 400, resp.text
    error = resp.json()
    assert (error["Error"], error["StatusCode"]) == ("BadRequest", 400)
    assert field in error["Description"]
    assert (await admin.head("/v1.0/backends/b1")).status_code == 404

    await admin.put("/v1.0/backends", json={"Identifier": "b1"})
    resp = await admin.patch("/v1.0/backends/b1", json={field: value})
    assert resp.status_code == 400 and field in resp.json()["Description"]


async def test_values_postgres_cannot_store_are_400_not_500(admin: httpx.AsyncClient) -> None:
    resp = await admin.put("/v1.0/backends", json={"Identifier": "b1", "Name": "nul\u0000char"})
    assert resp.status_code == 400, resp.text
    assert resp.json()["Error"] == "BadRequest"


async def test_an_unknown_backend_is_404_before_its_body_is_judged(admin: httpx.AsyncClient) -> None:
    """A body only the service refuses (pinned properties past their size) is a 404 for an unknown
    backend, whether a write reads the row first or writes it in one statement."""
    too_big = {"PinnedEmbeddingsProperties": {"options": "x" * 9000}}
    assert (await admin.patch("/v1.0/backends/nope", json=too_big)).status_code == 404
    assert (await admin.put("/v1.0/backends/nope", json=too_big)).status_code == 404
    await admin.put("/v1.0/backends", json={"Identifier": "b1"})
    for resp in (
        await admin.patch("/v1.0/backends/b1", json=too_big),
        await admin.put("/v1.0/backends/b1", json=too_big),
    ):
        assert resp.status_code == 400, resp.text
        assert "PinnedEmbeddingsProperties" in resp.json()["Description"]


async def test_a_patch_answers_what_is_stored_and_changes_nothing_else(
    admin: httpx.AsyncClient, clean_database_url: str
) -> None:
    full = {
        "Identifier": "b1",
        "Name": "one",
        "Hostname": "10.0.0.5",
        "Port": 11434,
        "Ssl": True,
        "Labels": ["eu", "gpu"],
        "PinnedCompletionsProperties": {"options": {"temperature": 0.2}},
        "HealthCheckIntervalMs": 1500,
        "MaxParallelRequests": 4,
        "ApiFormat": "OpenAI",
        "BearerToken": SECRET,
        "Headers": {"X-Api-Key": "header-secret"},
        "Querystring": "api_key=query-secret",
    }
    created = (await admin.put("/v1.0/backends", json=full)).json()
    secrets = stored_backend_secrets(clean_database_url, "b1")
    resp = await admin.patch("/v1.0/backends/b1", json={"Name": "renamed"})
    assert resp.status_code == 200, resp.text
    patched = resp.json()
    assert patched == (await admin.get("/v1.0/backends/b1")).json()
    assert patched["Name"] == "renamed"
    assert {key for key in created if created[key] != patched[key]} == {"Name", "LastUpdateUtc"}
    assert _instant(patched["LastUpdateUtc"]) > _instant(created["LastUpdateUtc"])
    assert stored_backend_secrets(clean_database_url, "b1") == secrets


def _instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_concurrent_patches_of_different_fields_all_land(admin: httpx.AsyncClient) -> None:
    await admin.put("/v1.0/backends", json={"Identifier": "b1"})
    bodies = [
        {"Name": "n"},
        {"Hostname": "h2"},
        {"Port": 9000},
        {"Ssl": True},
        {"Labels": ["a"]},
        {"ApiFormat": "OpenAI"},
        {"MaxParallelRequests": 3},
        {"RateLimitRequestsThreshold": 7},
    ]
    responses = await asyncio.gather(*(admin.patch("/v1.0/backends/b1", json=body) for body in bodies))
    assert [r.status_code for r in responses] == [200] * len(bodies)
    final = (await admin.get("/v1.0/backends/b1")).json()
    assert {key: final[key] for body in bodies for key in body} == {
        k: v for b in bodies for k, v in b.items()
    }
