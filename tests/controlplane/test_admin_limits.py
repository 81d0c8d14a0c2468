"""Every admin field and list has a size limit, published in the schema and answered with a 400 naming
the field and the limit; the number of frontends, backends and API keys is capped (409)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import httpx
import pytest

from controlplane.admin import limits
from controlplane.settings import Settings, load_settings
from tests.controlplane.conftest import TOKEN
from tests.controlplane.harness import running_controlplane

pytestmark = pytest.mark.usefixtures("controlplane")


def _nested(depth: int) -> dict[str, object]:
    value: object = 1
    for _ in range(depth - 1):
        value = [value]
    return {"options": value}


OVER = [
    ("backends", "Name", "n" * (limits.NAME_LENGTH + 1), str(limits.NAME_LENGTH)),
    ("backends", "Hostname", "h" * 60 + ".h" * 97, str(limits.HOSTNAME_LENGTH)),
    ("backends", "Labels", [f"l{i}" for i in range(limits.LABELS_COUNT + 1)], str(limits.LABELS_COUNT)),
    ("backends", "Labels", ["x" * (limits.LABEL_LENGTH + 1)], str(limits.LABEL_LENGTH)),
    ("backends", "Labels", [""], "1"),
    (
        "backends",
        "Headers",
        {f"X-{i}": "v" for i in range(limits.HEADERS_COUNT + 1)},
        str(limits.HEADERS_COUNT),
    ),
    ("backends", "Headers", {"X-" + "a" * limits.HEADER_NAME_LENGTH: "v"}, str(limits.HEADER_NAME_LENGTH)),
    (
        "backends",
        "Headers",
        {"X-Key": "v" * (limits.HEADER_VALUE_LENGTH + 1)},
        str(limits.HEADER_VALUE_LENGTH),
    ),
    ("backends", "Querystring", "a=" + "b" * limits.QUERYSTRING_LENGTH, str(limits.QUERYSTRING_LENGTH)),
    ("backends", "BearerToken", "t" * (limits.BEARER_TOKEN_LENGTH + 1), str(limits.BEARER_TOKEN_LENGTH)),
    ("backends", "HealthCheckUrl", "/" + "p" * limits.URL_PATH_LENGTH, str(limits.URL_PATH_LENGTH)),
    (
        "backends",
        "PinnedCompletionsProperties",
        {f"p{i}": 1 for i in range(limits.PINNED_COUNT + 1)},
        str(limits.PINNED_COUNT),
    ),
    (
        "frontends",
        "PinnedEmbeddingsProperties",
        {"prompt": "x" * limits.PINNED_JSON_BYTES},
        str(limits.PINNED_JSON_BYTES),
    ),
    ("frontends", "PinnedCompletionsProperties", _nested(limits.PINNED_DEPTH + 1), str(limits.PINNED_DEPTH)),
    ("frontends", "PinnedCompletionsProperties", {"stop": ["a\u0000b"]}, "NUL"),
    ("frontends", "Name", "nul\u0000", "without NUL"),
    (
        "frontends",
        "RequiredModels",
        [f"m{i}" for i in range(limits.REQUIRED_MODELS_COUNT + 1)],
        str(limits.REQUIRED_MODELS_COUNT),
    ),
    ("frontends", "RequiredModels", ["m" * (limits.MODEL_NAME_LENGTH + 1)], str(limits.MODEL_NAME_LENGTH)),
    ("frontends", "Backends", ["b"] * (limits.POOL_BACKENDS_COUNT + 1), str(limits.POOL_BACKENDS_COUNT)),
    ("frontends", "StickyHeaders", [f"x-h{i}" for i in range(33)], "32"),
    ("apikeys", "Frontends", ["f"] * (limits.KEY_FRONTENDS_COUNT + 1), str(limits.KEY_FRONTENDS_COUNT)),
    ("apikeys", "Name", "n" * (limits.NAME_LENGTH + 1), str(limits.NAME_LENGTH)),
    ("apikeys", "Identifier", "i" * 129, "128"),
]


@pytest.mark.parametrize(
    ("collection", "field", "value", "limit"), OVER, ids=[f"{c}-{f}" for c, f, *_ in OVER]
)
async def test_a_value_over_its_limit_is_400_naming_field_and_limit(
    admin: httpx.AsyncClient, collection: str, field: str, value: object, limit: str
) -> None:
    body = {"Identifier": "x", field: value}
    for resp in (
        await admin.put(f"/v1.0/{collection}", json=body),
        await admin.put(f"/v1.0/{collection}/x", json=body),
        await admin.patch(f"/v1.0/{collection}/x", json={field: value}),
    ):
        assert resp.status_code in (400, 404), resp.text
        if resp.status_code == 400:
            error = resp.json()
            assert (error["Error"], error["StatusCode"]) == ("BadRequest", 400)
            assert error["Description"].startswith(field) and limit in error["Description"], error
    assert (await admin.get(f"/v1.0/{collection}")).json() == []


async def test_values_at_their_limits_are_accepted(admin: httpx.AsyncClient) -> None:
    backend = {
        "Identifier": "b" * 128,
        "Name": "n" * limits.NAME_LENGTH,
        "Hostname": ".".join(["h" * 63] * 3 + ["h" * 61]),  # 253 characters
        "Port": 8000.0,  # an integer, by JSON Schema's rules
        "Labels": ["l" * limits.LABEL_LENGTH] + [f"l{i}" for i in range(limits.LABELS_COUNT - 1)],
        "Headers": {f"X-{i}": "v" * limits.HEADER_VALUE_LENGTH for i in range(limits.HEADERS_COUNT)},
        "BearerToken": "t" * limits.BEARER_TOKEN_LENGTH,
        "PinnedCompletionsProperties": {"options": _nested(limits.PINNED_DEPTH - 1)},
    }
    resp = await admin.put("/v1.0/backends", json=backend)
    assert resp.status_code == 201, resp.text
    assert resp.json()["Port"] == 8000
    frontend = {
        "Identifier": "f",
        "Backends": ["b" * 128],
        "RequiredModels": ["m" * limits.MODEL_NAME_LENGTH]
        + [f"m{i}" for i in range(limits.REQUIRED_MODELS_COUNT - 1)],
        "PinnedEmbeddingsProperties": {"prompt": "x" * (limits.PINNED_JSON_BYTES - 14)},  # {"prompt":"…"}
    }
    resp = await admin.put("/v1.0/frontends", json=frontend)
    assert resp.status_code == 201, resp.text


async def test_a_fractional_number_is_no_integer(admin: httpx.AsyncClient) -> None:
    resp = await admin.put("/v1.0/backends", json={"Identifier": "b", "Port": 8000.5})
    assert resp.status_code == 400 and resp.json()["Description"].startswith("Port"), resp.text


async def test_json_nested_too_deeply_is_400(admin: httpx.AsyncClient) -> None:
    content = b'{"Identifier": "b", "Labels": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    resp = await admin.put("/v1.0/backends", content=content, headers={"Content-Type": "application/json"})
    assert resp.status_code == 400, resp.text
    assert resp.json()["Error"] == "BadRequest"


async def test_the_schema_publishes_the_limits(anonymous: httpx.AsyncClient) -> None:
    schemas = (await anonymous.get("/schema/openapi.json")).json()["components"]["schemas"]
    backend = schemas["BackendIn"]["properties"]
    assert backend["Labels"]["maxItems"] == limits.LABELS_COUNT
    assert backend["Labels"]["items"]["maxLength"] == limits.LABEL_LENGTH
    assert backend["Headers"]["maxProperties"] == limits.HEADERS_COUNT
    assert backend["Headers"]["propertyNames"]["maxLength"] == limits.HEADER_NAME_LENGTH
    assert backend["Headers"]["additionalProperties"]["maxLength"] == limits.HEADER_VALUE_LENGTH
    assert backend["Hostname"]["maxLength"] == limits.HOSTNAME_LENGTH and "pattern" in backend["Hostname"]
    assert (backend["Port"]["minimum"], backend["Port"]["maximum"]) == (1, 65535)
    assert backend["PinnedCompletionsProperties"]["maxProperties"] == limits.PINNED_COUNT
    assert str(limits.PINNED_JSON_BYTES) in backend["PinnedCompletionsProperties"]["description"]
    frontend = schemas["FrontendIn"]["properties"]
    assert frontend["RequiredModels"]["maxItems"] == limits.REQUIRED_MODELS_COUNT
    assert frontend["RequiredModels"]["items"]["maxLength"] == limits.MODEL_NAME_LENGTH
    assert frontend["Backends"]["maxItems"] == limits.POOL_BACKENDS_COUNT
    assert frontend["Backends"]["items"]["maxLength"] == 128
    assert schemas["ApiKeyIn"]["properties"]["Frontends"]["maxItems"] == limits.KEY_FRONTENDS_COUNT
    assert "Identifier" in schemas["FrontendCreate"]["required"]
    assert "Identifier" not in schemas["FrontendIn"].get("required", [])


async def test_options_lists_every_method_of_the_path(admin: httpx.AsyncClient) -> None:
    for path, methods in (
        ("/v1.0/frontends", "GET, OPTIONS, PUT"),
        ("/v1.0/apikeys/k", "DELETE, GET, HEAD, OPTIONS, PATCH, PUT"),
    ):
        resp = await admin.options(path)
        assert (resp.status_code, resp.headers["Allow"]) == (204, methods)


def test_the_caps_are_settings() -> None:
    env = {"OLLAMAFLOW_DATABASE_URL": "postgresql://x@h/db", "OLLAMAFLOW_ADMIN_TOKENS": "t" * 30}
    defaults = load_settings(env=env)
    assert (defaults.max_frontends, defaults.max_backends, defaults.max_apikeys) == (5_000, 20_000, 50_000)
    assert load_settings(env={**env, "OLLAMAFLOW_MAX_BACKENDS": "30000"}).max_backends == 30_000
    with pytest.raises(Exception, match="OLLAMAFLOW_MAX_FRONTENDS"):
        load_settings(env={**env, "OLLAMAFLOW_MAX_FRONTENDS": "0"})


@pytest.fixture
async def capped(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    capped = dataclasses.replace(settings, max_frontends=2, max_backends=3, max_apikeys=1)
    with running_controlplane(capped) as plane:
        async with httpx.AsyncClient(
            base_url=plane.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
        ) as client:
            yield client


async def test_creates_beyond_a_cap_are_409_naming_the_setting(capped: httpx.AsyncClient) -> None:
    # Racing creates: the cap holds exactly.
    answers = await asyncio.gather(
        *(capped.put("/v1.0/backends", json={"Identifier": f"b{i}"}) for i in range(8))
    )
    assert sorted(r.status_code for r in answers) == [201] * 3 + [409] * 5
    refused = next(r for r in answers if r.status_code == 409).json()
    assert refused["Error"] == "Conflict" and "OLLAMAFLOW_MAX_BACKENDS=3" in refused["Description"]
    assert len((await capped.get("/v1.0/backends")).json()) == 3
    # Replacing and patching are not creating.
    kept = next(r for r in answers if r.status_code == 201).json()["Identifier"]
    assert (await capped.patch(f"/v1.0/backends/{kept}", json={"Port": 9})).status_code == 200

    for name in ("f1", "f2"):
        body = {"Identifier": name, "Hostname": f"{name}.example"}
        assert (await capped.put("/v1.0/frontends", json=body)).status_code == 201
    third = await capped.put("/v1.0/frontends", json={"Identifier": "f3", "Hostname": "f3.example"})
    assert third.status_code == 409 and "OLLAMAFLOW_MAX_FRONTENDS=2" in third.json()["Description"]
    assert (await capped.put("/v1.0/apikeys", json={"Identifier": "k1"})).status_code == 201
    second = await capped.put("/v1.0/apikeys", json={"Identifier": "k2"})
    assert second.status_code == 409 and "OLLAMAFLOW_MAX_APIKEYS=1" in second.json()["Description"]
    # Room again once one goes.
    assert (await capped.delete("/v1.0/frontends/f1")).status_code == 204
    assert (
        await capped.put("/v1.0/frontends", json={"Identifier": "f3", "Hostname": "f3.example"})
    ).status_code == 201
