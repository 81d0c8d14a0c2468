"""``/v1.0/apikeys`` over real HTTP against a real database, and what the snapshot carries of keys."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from tests.controlplane.conftest import TOKEN
from tests.controlplane.harness import RunningControlPlane, watch_snapshots

pytestmark = pytest.mark.usefixtures("controlplane")


async def _frontend(admin: httpx.AsyncClient, identifier: str, **fields: object) -> None:
    body = {"Identifier": identifier, "Hostname": f"{identifier}.test", **fields}  # Hostnames are unique
    resp = await admin.put("/v1.0/frontends", json=body)
    assert resp.status_code == 201, resp.text


async def test_create_returns_the_key_once_and_reads_never_show_it(admin: httpx.AsyncClient) -> None:
    await _frontend(admin, "f1")
    resp = await admin.put("/v1.0/apikeys", json={"Identifier": "k1", "Name": "team a", "Frontends": ["f1"]})
    assert resp.status_code == 201, resp.text
    created = resp.json()
    key = created.pop("Key")
    assert key.startswith("ofk_") and len(key) == 4 + 43  # 32 random bytes, URL-safe base64
    assert created["KeyPrefix"] == key[:12]
    assert (created["Identifier"], created["Name"], created["Frontends"]) == ("k1", "team a", ["f1"])
    # The defaults.
    assert created["AllowModelManagement"] is False and created["Active"] is True
    assert created["RateLimitRequestsPerSecond"] == 0
    assert (created["RequestsTotal"], created["RateLimitedTotal"], created["LastUsedUtc"]) == (0, 0, None)
    assert created["CreatedUtc"] == created["LastUpdateUtc"] and created["CreatedUtc"].endswith("Z")

    one = await admin.get("/v1.0/apikeys/k1")
    listed = await admin.get("/v1.0/apikeys")
    assert one.json() == created and listed.json() == [created]
    for text in (one.text, listed.text):
        assert (
            key not in text
            and key[12:20] not in text
            and hashlib.sha256(key.encode()).hexdigest() not in text
        )

    other = (await admin.put("/v1.0/apikeys", json={"Identifier": "k2"})).json()
    assert other["Key"] != key and other["Frontends"] == []
    assert [k["Identifier"] for k in (await admin.get("/v1.0/apikeys")).json()] == [
        "k2",
        "k1",
    ]  # newest first


async def test_status_codes(admin: httpx.AsyncClient) -> None:
    assert (await admin.put("/v1.0/apikeys", json={"Identifier": "k1"})).status_code == 201
    duplicate = await admin.put("/v1.0/apikeys", json={"Identifier": "k1", "Name": "again"})
    assert duplicate.status_code == 409 and duplicate.json()["Error"] == "Conflict"
    assert (await admin.get("/v1.0/apikeys/k1")).json()["Name"] is None
    there, missing = await admin.head("/v1.0/apikeys/k1"), await admin.head("/v1.0/apikeys/nope")
    assert (there.status_code, missing.status_code) == (200, 404)
    for resp in (
        await admin.get("/v1.0/apikeys/nope"),
        await admin.put("/v1.0/apikeys/nope", json={}),
        await admin.patch("/v1.0/apikeys/nope", json={"Name": "x"}),
        await admin.delete("/v1.0/apikeys/nope"),
    ):
        assert resp.status_code == 404, resp.text
        assert resp.json()["Error"] == "NotFound" and "API key 'nope'" in resp.json()["Description"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"Name": "no id"}, "Identifier"),
        ({"Identifier": "k", "RateLimitRequestsPerSecond": -1}, "RateLimitRequestsPerSecond"),
        ({"Identifier": "k", "RateLimitRequestsPerSecond": "5"}, "RateLimitRequestsPerSecond"),
        ({"Identifier": "k", "AllowModelManagement": "true"}, "AllowModelManagement"),
        ({"Identifier": "k", "Frontends": "f1"}, "Frontends"),
        ({"Identifier": "has space"}, "Identifier"),
    ],
)
async def test_invalid_bodies_are_400_naming_the_field(
    admin: httpx.AsyncClient, body: dict[str, object], field: str
) -> None:
    resp = await admin.put("/v1.0/apikeys", json=body)
    assert resp.status_code == 400, resp.text
    assert resp.json()["Error"] == "BadRequest" and field in resp.json()["Description"]
    assert (await admin.get("/v1.0/apikeys")).json() == []


async def test_unknown_frontends_are_409_naming_them(admin: httpx.AsyncClient) -> None:
    resp = await admin.put("/v1.0/apikeys", json={"Identifier": "k", "Frontends": ["nope"]})
    assert resp.status_code == 409, resp.text
    assert resp.json()["Description"] == "Frontends: no frontend with identifier 'nope'"
    assert (await admin.get("/v1.0/apikeys")).json() == []


async def test_patch_replace_and_delete(admin: httpx.AsyncClient) -> None:
    await _frontend(admin, "f1")
    await _frontend(admin, "f2")
    body = {"Identifier": "k1", "Name": "one", "Frontends": ["f1"], "RateLimitRequestsPerSecond": 2.5}
    created = (await admin.put("/v1.0/apikeys", json=body)).json()

    patched = await admin.patch("/v1.0/apikeys/k1", json={"Frontends": ["f2", "f1", "f2"], "Active": False})
    assert patched.status_code == 200, patched.text
    assert patched.json()["Frontends"] == ["f2", "f1"]  # repeats dropped
    assert (patched.json()["Name"], patched.json()["RateLimitRequestsPerSecond"]) == ("one", 2.5)
    assert patched.json()["Active"] is False and "Key" not in patched.json()
    assert patched.json()["KeyPrefix"] == created["KeyPrefix"]  # the key stays the same
    bad = await admin.patch("/v1.0/apikeys/k1", json={"Frontends": ["gone"]})
    assert bad.status_code == 409 and "'gone'" in bad.json()["Description"]

    replaced = (
        await admin.put("/v1.0/apikeys/k1", json={"Identifier": "other", "AllowModelManagement": True})
    ).json()
    assert replaced["Identifier"] == "k1"  # the URL names the key
    assert (replaced["Name"], replaced["Frontends"], replaced["RateLimitRequestsPerSecond"]) == (None, [], 0)
    assert replaced["AllowModelManagement"] is True and replaced["Active"] is True
    assert replaced["CreatedUtc"] == created["CreatedUtc"] < replaced["LastUpdateUtc"]

    assert (await admin.delete("/v1.0/apikeys/k1")).status_code == 204
    assert (await admin.head("/v1.0/apikeys/k1")).status_code == 404


async def test_a_deleted_frontend_leaves_every_keys_list(admin: httpx.AsyncClient) -> None:
    await _frontend(admin, "f1")
    await _frontend(admin, "f2")
    await admin.put("/v1.0/apikeys", json={"Identifier": "k1", "Frontends": ["f1", "f2"]})
    await admin.put("/v1.0/apikeys", json={"Identifier": "k2", "Frontends": ["f2"]})
    before = (await admin.get("/v1.0/apikeys/k1")).json()
    assert (await admin.delete("/v1.0/frontends/f2")).status_code == 204
    after = (await admin.get("/v1.0/apikeys/k1")).json()
    assert after["Frontends"] == ["f1"] and after["LastUpdateUtc"] > before["LastUpdateUtc"]
    assert (await admin.get("/v1.0/apikeys/k2")).json()["Frontends"] == []
    # A frontend created again under that id is not opened to the keys.
    await _frontend(admin, "f2")
    assert (await admin.get("/v1.0/apikeys/k2")).json()["Frontends"] == []


async def test_keys_need_the_admin_token(anonymous: httpx.AsyncClient) -> None:
    for resp in (
        await anonymous.get("/v1.0/apikeys"),
        await anonymous.put("/v1.0/apikeys", json={"Identifier": "k"}),
    ):
        assert resp.status_code == 401 and resp.headers["www-authenticate"] == "Bearer"


async def test_the_frontend_access_settings_default_to_off(admin: httpx.AsyncClient) -> None:
    created = (await admin.put("/v1.0/frontends", json={"Identifier": "f1"})).json()
    assert created["BlockHttp10"] is True
    for field in (
        "AllowModelManagement",
        "ModelManagementRequiresKey",
        "PullAddsRequiredModels",
        "AllowRouteExplain",
        "RequireApiKeys",
    ):
        assert created[field] is False, field
        patched = (await admin.patch("/v1.0/frontends/f1", json={field: True})).json()
        assert patched[field] is True
    bad = await admin.patch("/v1.0/frontends/f1", json={"RequireApiKeys": 1})
    assert bad.status_code == 400 and "RequireApiKeys" in bad.json()["Description"]


async def test_the_openapi_schema_lists_the_routes(anonymous: httpx.AsyncClient) -> None:
    schema = (await anonymous.get("/schema/openapi.json")).json()
    assert {"get", "put"} <= set(schema["paths"]["/v1.0/apikeys"])
    assert {"get", "head", "put", "patch", "delete"} <= set(schema["paths"]["/v1.0/apikeys/{identifier}"])
    schemas = schema["components"]["schemas"]
    assert "Key" in schemas["ApiKeyCreated"]["properties"]
    assert "Key" not in schemas["ApiKeyOut"]["properties"]
    assert {"KeyPrefix", "RequestsTotal", "RateLimitedTotal", "LastUsedUtc"} <= set(
        schemas["ApiKeyOut"]["properties"]
    )
    assert "RequireApiKeys" in schemas["FrontendIn"]["properties"]


async def test_the_snapshot_carries_digests_only_and_the_admin_view_redacts_them(
    admin: httpx.AsyncClient, controlplane: RunningControlPlane, nats_url: str
) -> None:
    namespace = controlplane.plane.settings.bus_namespace
    async with watch_snapshots(nats_url, namespace) as watch:
        await _frontend(admin, "f1", RequireApiKeys=True)
        body = {"Identifier": "k1", "Frontends": ["f1"], "RateLimitRequestsPerSecond": 4}
        key = (await admin.put("/v1.0/apikeys", json=body)).json()["Key"]
        await admin.put("/v1.0/apikeys", json={"Identifier": "off", "Active": False})
        snapshot = await watch.next(lambda s: bool(s.content.api_keys))
    (view,) = snapshot.content.api_keys  # the inactive key is left out
    assert (view.id, view.digest, view.frontends) == ("k1", hashlib.sha256(key.encode()).hexdigest(), ("f1",))
    assert view.rate_limit_requests_per_second == 4.0
    assert hashlib.sha256(TOKEN.encode()).hexdigest() in snapshot.content.cluster.admin_token_digests
    assert snapshot.content.frontends[0].require_api_keys
    shown = (await admin.get("/v1.0/snapshot")).json()
    assert key not in str(shown) and view.digest not in str(shown)
    assert shown["Content"]["api_keys"][0]["digest"] == "<redacted>"
    assert set(shown["Content"]["cluster"]["admin_token_digests"]) == {"<redacted>"}
