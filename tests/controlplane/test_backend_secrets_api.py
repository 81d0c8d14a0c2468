"""Backend secrets in the admin API: reads show names only, GET-then-PUT keeps them, new values replace
them, and a control plane without a secrets key refuses them (real HTTP, real database)."""

from __future__ import annotations

import dataclasses

import httpx

from controlplane.settings import Settings
from shared.secret_box import Keyring
from tests.controlplane.conftest import TOKEN
from tests.controlplane.harness import running_controlplane
from tests.support.secrets import stored_backend_secrets

TOKEN_VALUE = "sk-bearer-5f0c1d"
HEADER_VALUE = "hdr-key-9a7e21"
QUERY_VALUE = "q-key-33b8c4"
SECRET_BACKEND = {
    "Identifier": "b1",
    "Hostname": "10.0.0.7",
    "Port": 11434,
    "BearerToken": TOKEN_VALUE,
    "Headers": {"X-Api-Key": HEADER_VALUE, "X-Team": "blue"},
    "Querystring": f"api-version=2024&api_key={QUERY_VALUE}&flag",
}


def _stored(database_url: str) -> tuple[str | None, str | None, dict[str, str]]:
    return stored_backend_secrets(database_url, "b1")


async def test_reads_show_names_never_values(admin: httpx.AsyncClient) -> None:
    created = await admin.put("/v1.0/backends", json=SECRET_BACKEND)
    assert created.status_code == 201, created.text
    for resp in (created, await admin.get("/v1.0/backends/b1"), await admin.get("/v1.0/backends")):
        for secret in (TOKEN_VALUE, HEADER_VALUE, QUERY_VALUE, "blue", "2024"):
            assert secret not in resp.text
    shown = created.json()
    assert shown["HasBearerToken"] is True and "BearerToken" not in shown
    assert shown["Headers"] == {"X-Api-Key": "<redacted>", "X-Team": "<redacted>"}
    assert shown["Querystring"] == "api-version=<redacted>&api_key=<redacted>&<redacted>"


async def test_get_then_put_keeps_every_secret(admin: httpx.AsyncClient, clean_database_url: str) -> None:
    await admin.put("/v1.0/backends", json=SECRET_BACKEND)
    before = _stored(clean_database_url)
    shown = (await admin.get("/v1.0/backends/b1")).json()
    # What a UI does: change one thing, send everything it read back.
    shown["Port"] = 11435
    put = await admin.put("/v1.0/backends/b1", json=shown)
    assert put.status_code == 200, put.text
    assert put.json()["Port"] == 11435
    assert _stored(clean_database_url) == before
    # The same through PATCH, and with header names in another case.
    patch = {
        "Headers": {"x-api-key": "<redacted>", "X-Team": "<redacted>"},
        "Querystring": shown["Querystring"],
    }
    assert (await admin.patch("/v1.0/backends/b1", json=patch)).status_code == 200
    token, query, headers = _stored(clean_database_url)
    assert (token, query) == before[:2]
    assert headers == {"x-api-key": HEADER_VALUE, "X-Team": "blue"}


async def test_new_values_replace_and_omitted_ones_go(
    admin: httpx.AsyncClient, clean_database_url: str
) -> None:
    await admin.put("/v1.0/backends", json=SECRET_BACKEND)
    body = {
        "BearerToken": "<redacted>",
        "Headers": {"X-Api-Key": "new-header-value"},  # X-Team left out: removed
        "Querystring": "api_key=<redacted>&api-version=2025",  # order and values as given
    }
    assert (await admin.put("/v1.0/backends/b1", json=body)).status_code == 200
    assert _stored(clean_database_url) == (
        TOKEN_VALUE,
        f"api_key={QUERY_VALUE}&api-version=2025",
        {"X-Api-Key": "new-header-value"},
    )
    # A PUT without Headers and Querystring clears them, as any omitted field; the token stays.
    assert (await admin.put("/v1.0/backends/b1", json={"Hostname": "h"})).status_code == 200
    assert _stored(clean_database_url) == (TOKEN_VALUE, None, {})


async def test_keeping_what_is_not_stored_keeps_nothing(
    admin: httpx.AsyncClient, clean_database_url: str
) -> None:
    """A mark for a header or parameter another writer removed meanwhile (or one typed in) is left out;
    the rest of the body applies. So every body the published schema allows is accepted."""
    await admin.put("/v1.0/backends", json=SECRET_BACKEND)
    body = {
        "Headers": {"X-Other": "<redacted>", "X-Api-Key": "<redacted>"},
        "Querystring": "other=<redacted>&v=1",
    }
    resp = await admin.patch("/v1.0/backends/b1", json=body)
    assert resp.status_code == 200, resp.text
    assert (resp.json()["Headers"], resp.json()["Querystring"]) == (
        {"X-Api-Key": "<redacted>"},
        "v=<redacted>",
    )
    assert _stored(clean_database_url) == (TOKEN_VALUE, "v=1", {"X-Api-Key": HEADER_VALUE})
    created = await admin.put("/v1.0/backends", json={"Identifier": "b2", **body})
    assert created.status_code == 201 and created.json()["Headers"] == {}


async def test_new_values_in_a_patch_are_stored_sealed(
    admin: httpx.AsyncClient, clean_database_url: str
) -> None:
    await admin.put("/v1.0/backends", json={"Identifier": "b1", "Hostname": "10.0.0.7"})
    body = {
        "BearerToken": TOKEN_VALUE,
        "Headers": {"X-Api-Key": HEADER_VALUE},
        "Querystring": f"k={QUERY_VALUE}",
    }
    resp = await admin.patch("/v1.0/backends/b1", json=body)
    assert resp.status_code == 200, resp.text
    shown = resp.json()
    assert (shown["HasBearerToken"], shown["Headers"], shown["Querystring"]) == (
        True,
        {"X-Api-Key": "<redacted>"},
        "k=<redacted>",
    )
    assert all(secret not in resp.text for secret in (TOKEN_VALUE, HEADER_VALUE, QUERY_VALUE))
    # Opened with the test key: sealed, as every write stores them. (Before the keyless control plane
    # below: the keyring is the process's, and that one empties it.)
    assert _stored(clean_database_url) == (TOKEN_VALUE, f"k={QUERY_VALUE}", {"X-Api-Key": HEADER_VALUE})


async def test_a_control_plane_without_a_secrets_key_refuses_new_secrets(settings: Settings) -> None:
    keyless = dataclasses.replace(settings, secrets=Keyring())
    with running_controlplane(keyless) as running:
        async with httpx.AsyncClient(
            base_url=running.url, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as admin:
            for body in (
                {"Identifier": "b1", "BearerToken": "t"},
                {"Identifier": "b1", "Headers": {"X-Api-Key": "k"}},
                {"Identifier": "b1", "Querystring": "key=k"},
            ):
                resp = await admin.put("/v1.0/backends", json=body)
                assert resp.status_code == 400
                assert "OLLAMAFLOW_SECRETS_KEY" in resp.json()["Description"]
            # Without secrets all is as usual, and clearing is always allowed.
            assert (
                await admin.put("/v1.0/backends", json={"Identifier": "b1", "Headers": {}})
            ).status_code == 201
            assert (await admin.patch("/v1.0/backends/b1", json={"BearerToken": None})).status_code == 200
