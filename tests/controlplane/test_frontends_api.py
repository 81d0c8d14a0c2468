"""``/v1.0/frontends`` over real HTTP against a real database: OllamaFlow's semantics and status codes."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.usefixtures("controlplane")


async def _backend(admin: httpx.AsyncClient, identifier: str) -> None:
    resp = await admin.put("/v1.0/backends", json={"Identifier": identifier, "Hostname": "127.0.0.1"})
    assert resp.status_code == 201, resp.text


async def test_create_read_list_and_defaults(admin: httpx.AsyncClient) -> None:
    assert (await admin.get("/v1.0/frontends")).json() == []
    await _backend(admin, "b1")

    resp = await admin.put("/v1.0/frontends", json={"Identifier": "f1", "Name": "one", "Backends": ["b1"]})
    assert resp.status_code == 201, resp.text
    created = resp.json()
    assert created["Identifier"] == "f1"
    assert created["Backends"] == ["b1"]
    # OllamaFlow's defaults for everything not given.
    assert created["Hostname"] == "*"
    assert created["TimeoutMs"] == 60000
    assert created["LoadBalancing"] == "ModelAware"  # beyond OllamaFlow (RoundRobin there)
    assert created["MaxRequestBodySize"] == 536870912
    assert created["StickySessionExpirationMs"] == 1800000
    assert created["AllowRetries"] is True and created["Active"] is True
    assert created["PinnedCompletionsProperties"] == {}
    assert created["StickyHeaders"] == ["x-conversation-id", "x-thread-id"]
    assert (created["QueueSize"], created["QueueTimeoutMs"]) == (128, 30000)
    assert created["CreatedUtc"] == created["LastUpdateUtc"]
    assert created["CreatedUtc"].endswith("Z")

    assert (await admin.get("/v1.0/frontends/f1")).json() == created
    assert (await admin.get("/v1.0/frontends")).json() == [created]


async def test_list_is_newest_first(admin: httpx.AsyncClient) -> None:
    for name in ("first", "second", "third"):
        body = {"Identifier": name, "Hostname": f"{name}.test"}
        assert (await admin.put("/v1.0/frontends", json=body)).status_code == 201
    assert [f["Identifier"] for f in (await admin.get("/v1.0/frontends")).json()] == [
        "third",
        "second",
        "first",
    ]


async def test_head_says_whether_it_exists(admin: httpx.AsyncClient) -> None:
    await admin.put("/v1.0/frontends", json={"Identifier": "f1"})
    there = await admin.head("/v1.0/frontends/f1")
    missing = await admin.head("/v1.0/frontends/nope")
    assert (there.status_code, missing.status_code) == (200, 404)
    assert there.content == b"" and missing.content == b""


async def test_unknown_ids_are_404(admin: httpx.AsyncClient) -> None:
    for resp in (
        await admin.get("/v1.0/frontends/nope"),
        await admin.put("/v1.0/frontends/nope", json={}),
        await admin.patch("/v1.0/frontends/nope", json={"Name": "x"}),
        await admin.delete("/v1.0/frontends/nope"),
    ):
        assert resp.status_code == 404, resp.text
        assert resp.json()["Error"] == "NotFound"
        assert "nope" in resp.json()["Description"]


async def test_duplicate_identifier_is_409(admin: httpx.AsyncClient) -> None:
    assert (await admin.put("/v1.0/frontends", json={"Identifier": "f1"})).status_code == 201
    resp = await admin.put("/v1.0/frontends", json={"Identifier": "f1", "Name": "again"})
    assert resp.status_code == 409
    assert resp.json()["Error"] == "Conflict" and resp.json()["StatusCode"] == 409
    assert (await admin.get("/v1.0/frontends/f1")).json()["Name"] is None


async def test_missing_identifier_is_400(admin: httpx.AsyncClient) -> None:
    resp = await admin.put("/v1.0/frontends", json={"Name": "anonymous"})
    assert resp.status_code == 400
    assert "Identifier" in resp.json()["Description"]


async def test_replace_resets_omitted_fields_and_keeps_the_url_id(admin: httpx.AsyncClient) -> None:
    await _backend(admin, "b1")
    created = (
        await admin.put(
            "/v1.0/frontends",
            json={
                "Identifier": "f1",
                "Name": "one",
                "Hostname": "a.example",
                "TimeoutMs": 5,
                "Backends": ["b1"],
            },
        )
    ).json()

    # The body's Identifier is ignored: the URL names the frontend (as OllamaFlow does).
    resp = await admin.put("/v1.0/frontends/f1", json={"Identifier": "other", "Name": "renamed"})
    assert resp.status_code == 200, resp.text
    replaced = resp.json()
    assert replaced["Identifier"] == "f1"
    assert replaced["Name"] == "renamed"
    assert (replaced["Hostname"], replaced["TimeoutMs"], replaced["Backends"]) == ("*", 60000, [])
    assert replaced["CreatedUtc"] == created["CreatedUtc"]
    assert replaced["LastUpdateUtc"] > created["LastUpdateUtc"]
    assert (await admin.head("/v1.0/frontends/other")).status_code == 404


async def test_patch_changes_only_the_given_fields(admin: httpx.AsyncClient) -> None:
    await _backend(admin, "b1")
    await admin.put("/v1.0/frontends", json={"Identifier": "f1", "Name": "one", "Hostname": "a.example"})
    resp = await admin.patch("/v1.0/frontends/f1", json={"Backends": ["b1"], "UseStickySessions": True})
    assert resp.status_code == 200, resp.text
    patched = resp.json()
    assert (patched["Name"], patched["Hostname"]) == ("one", "a.example")
    assert (patched["Backends"], patched["UseStickySessions"]) == (["b1"], True)
    assert (await admin.get("/v1.0/frontends/f1")).json() == patched


async def test_delete(admin: httpx.AsyncClient) -> None:
    await admin.put("/v1.0/frontends", json={"Identifier": "f1"})
    resp = await admin.delete("/v1.0/frontends/f1")
    assert resp.status_code == 204 and resp.content == b""
    assert (await admin.get("/v1.0/frontends/f1")).status_code == 404


async def test_unknown_backend_ids_are_rejected_by_name(admin: httpx.AsyncClient) -> None:
    await _backend(admin, "b1")
    resp = await admin.put("/v1.0/frontends", json={"Identifier": "f1", "Backends": ["b1", "ghost"]})
    assert resp.status_code == 409  # a valid body naming what is not there
    body = resp.json()
    assert (
        body["Error"] == "Conflict" and "Backends" in body["Description"] and "ghost" in body["Description"]
    )
    assert "'b1'" not in body["Description"]
    assert (await admin.head("/v1.0/frontends/f1")).status_code == 404

    await admin.put("/v1.0/frontends", json={"Identifier": "f1", "Backends": ["b1"]})
    for resp in (
        await admin.put("/v1.0/frontends/f1", json={"Backends": ["ghost"]}),
        await admin.patch("/v1.0/frontends/f1", json={"Backends": ["b1", "ghost"]}),
    ):
        assert resp.status_code == 409 and "ghost" in resp.json()["Description"]
    assert (await admin.get("/v1.0/frontends/f1")).json()["Backends"] == ["b1"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("StickySessionExpirationMs", 9999),
        ("StickySessionExpirationMs", 86400001),
        ("TimeoutMs", -1),
        ("MaxRequestBodySize", 0),
        ("LoadBalancing", "Fastest"),
        ("LoadBalancing", "roundrobin"),
        ("QueueSize", -1),
        ("QueueSize", 1.5),
        ("QueueTimeoutMs", -1),
        ("QueueTimeoutMs", 3600001),
        ("StickyHeaders", "x-user"),
        ("StickyHeaders", ["x user"]),
        ("StickyHeaders", [""]),
        ("StickyHeaders", ["x:y"]),
        ("StickyHeaders", [f"x-{i}" for i in range(33)]),
        ("Hostname", ""),
        ("Backends", "b1"),
        ("AllowRetries", "yes"),
        ("PinnedCompletionsProperties", [1, 2]),
        ("Identifier", "has/slash"),
    ],
)
async def test_invalid_values_are_400_naming_the_field(
    admin: httpx.AsyncClient, field: str, value: object
) -> None:
    body = {"Identifier": "f1", field: value}
    for resp in (
        await admin.put("/v1.0/frontends", json=body),
        await admin.patch("/v1.0/frontends/f1", json={field: value}) if field != "Identifier" else None,
    ):
        if resp is None:
            continue
        assert resp.status_code == 400, resp.text
        error = resp.json()
        assert (error["Error"], error["StatusCode"]) == ("BadRequest", 400)
        assert field in error["Description"]


async def test_accepts_a_full_ollamaflow_object(admin: httpx.AsyncClient) -> None:
    """What OllamaFlow's Postman collection and UI send back, read-only fields included."""
    await _backend(admin, "backend1")
    ollamaflow_frontend = {
        "Identifier": "frontend1",
        "Name": "My frontend",
        "Hostname": "localhost",
        "TimeoutMs": 60000,
        "LoadBalancing": "Random",
        "BlockHttp10": True,
        "MaxRequestBodySize": 536870912,
        "Backends": ["backend1"],
        "RequiredModels": ["all-minilm", "qwen2.5:7b"],
        "LogRequestFull": False,
        "LogRequestBody": False,
        "LogResponseBody": False,
        "UseStickySessions": False,
        "StickySessionExpirationMs": 1800000,
        "PinnedEmbeddingsProperties": {},
        "PinnedCompletionsProperties": {"options": {"num_ctx": 4096}},
        "AllowEmbeddings": True,
        "AllowCompletions": True,
        "AllowRetries": True,
        "Active": True,
        "CreatedUtc": "2025-06-07T00:00:00.000000Z",
        "LastUpdateUtc": "2025-06-07T00:00:00.000000Z",
    }
    resp = await admin.put("/v1.0/frontends", json=ollamaflow_frontend)
    assert resp.status_code == 201, resp.text
    stored = resp.json()
    for key, value in ollamaflow_frontend.items():
        if not key.endswith("Utc"):
            assert stored[key] == value, key
    # Timestamps are the server's, not the client's.
    assert stored["CreatedUtc"] > "2026"


@pytest.mark.parametrize("strategy", ["RoundRobin", "Random", "LeastConnections", "ModelAware"])
async def test_every_strategy_is_accepted(admin: httpx.AsyncClient, strategy: str) -> None:
    resp = await admin.put("/v1.0/frontends", json={"Identifier": "f1", "LoadBalancing": strategy})
    assert resp.status_code == 201, resp.text
    assert resp.json()["LoadBalancing"] == strategy
    other = "Random" if strategy != "Random" else "LeastConnections"
    assert (await admin.patch("/v1.0/frontends/f1", json={"LoadBalancing": other})).json()[
        "LoadBalancing"
    ] == other


async def test_queue_and_sticky_settings_are_stored_lower_case(admin: httpx.AsyncClient) -> None:
    resp = await admin.put(
        "/v1.0/frontends",
        json={
            "Identifier": "f1",
            "StickyHeaders": ["X-Session-Id", "x-session-id", "X-User"],
            "QueueSize": 0,
            "QueueTimeoutMs": 3600000,
        },
    )
    assert resp.status_code == 201, resp.text
    created = resp.json()
    assert created["StickyHeaders"] == ["x-session-id", "x-user"]
    assert (created["QueueSize"], created["QueueTimeoutMs"]) == (0, 3600000)

    patched = (await admin.patch("/v1.0/frontends/f1", json={"StickyHeaders": ["X-Thread-ID"]})).json()
    assert patched["StickyHeaders"] == ["x-thread-id"] and patched["QueueSize"] == 0
    # An empty list is allowed: no header keys a session (sticky sessions then never apply).
    assert (await admin.patch("/v1.0/frontends/f1", json={"StickyHeaders": []})).json()["StickyHeaders"] == []
    # A replace without them resets them to the defaults.
    replaced = (await admin.put("/v1.0/frontends/f1", json={"Name": "again"})).json()
    assert replaced["StickyHeaders"] == ["x-conversation-id", "x-thread-id"]
    assert (replaced["QueueSize"], replaced["QueueTimeoutMs"], replaced["LoadBalancing"]) == (
        128,
        30000,
        "ModelAware",
    )
