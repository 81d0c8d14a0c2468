"""Backend secrets from the admin API to the backend through real data planes, and nowhere in clear on
the way: not in the snapshot NATS keeps, not in a data plane's cache file (owner-only). A data plane
holding the wrong key does not use the backend and says so; one holding the key as a previous key
(a rotation) opens it."""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import stat
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from controlplane.settings import Settings
from dataplane.settings import DataPlaneSettings
from shared.bus import Bus, BusNames
from shared.secret_box import load_keyring
from tests.controlplane.conftest import TOKEN
from tests.controlplane.harness import RunningControlPlane, eventually, running_controlplane
from tests.dataplane.harness import RunningDataPlane, running_dataplane
from tests.dataplane.recorder import Recorder, recorder
from tests.support.secrets import TEST_KEYRING, TEST_SECRETS_KEY
from tests.support.signing import public_key_beside

BEARER, HEADER, QUERY = "bearer-s3cret-51c9", "header-s3cret-0d7e", "query-s3cret-a4b2"
ROTATED = "rotated-bearer-token-4f1c"
SECRETS = (BEARER, HEADER, QUERY)
GENERATE = {"model": "echo", "prompt": "hi", "stream": False}


def _dp_settings(settings: Settings, **changes: object) -> DataPlaneSettings:
    base = DataPlaneSettings(
        nats_url=settings.nats_url,
        bus_namespace=settings.bus_namespace,
        dataplane_id="dp-" + uuid.uuid4().hex[:8],
        report_interval=0.2,
        snapshot_poll_interval=0.5,
        secrets=TEST_KEYRING,
        snapshot_public_key_files=(public_key_beside(settings.snapshot_signing_key_file),),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture
async def rec() -> AsyncIterator[Recorder]:
    async with recorder() as r:
        yield r


@contextlib.asynccontextmanager
async def _configured(
    settings: Settings, rec: Recorder
) -> AsyncIterator[tuple[httpx.AsyncClient, RunningControlPlane]]:
    """A control plane with backend ``b1`` (the recorder, with all three secrets) behind frontend ``f``."""
    with running_controlplane(settings) as running:
        async with httpx.AsyncClient(
            base_url=running.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        ) as admin:
            port = int(rec.url.rsplit(":", 1)[1])
            backend = {
                "Identifier": "b1",
                "Hostname": "127.0.0.1",
                "Port": port,
                "BearerToken": BEARER,
                "Headers": {"X-Api-Key": HEADER},
                "Querystring": f"api_key={QUERY}",
            }
            assert (await admin.put("/v1.0/backends", json=backend)).status_code == 201
            frontend = {"Identifier": "f", "Hostname": "*", "Backends": ["b1"]}
            assert (await admin.put("/v1.0/frontends", json=frontend)).status_code == 201
            yield admin, running


async def _applied(dp: RunningDataPlane) -> None:
    await eventually(lambda: dp.app.state.table.routes() != [], within=30, what="the frontend applied")


async def _kv_bytes(settings: Settings) -> bytes:
    bus = Bus(settings.nats_url, BusNames(settings.bus_namespace), client_name="test-raw-kv")
    await bus.connect()
    try:
        stored = await bus.read_snapshot()
    finally:
        await bus.close()
    assert stored is not None
    return stored[0]


async def test_secrets_reach_the_backend_and_nothing_on_disk_holds_them(
    settings: Settings, rec: Recorder, tmp_path: Path
) -> None:
    cache = tmp_path / "cache" / "snapshot.json"
    async with (
        _configured(settings, rec) as (admin, cp),
        running_dataplane(_dp_settings(settings, snapshot_cache=cache)) as dp,
    ):
        await _applied(dp)
        # Both planes cut the values they hold out of every log line (shared.logs.KnownSecrets).
        for known in (dp.app.state.known_secrets, cp.plane.known_secrets):
            assert known.redact(f"{BEARER} {HEADER} {QUERY}") == "REDACTED REDACTED REDACTED"
        async with httpx.AsyncClient() as client:
            resp = await client.post(dp.url + "/api/generate?trace=1", json=GENERATE)
        assert resp.status_code == 200, resp.text
        seen = rec.seen[-1]
        assert seen.headers["Authorization"] == f"Bearer {BEARER}"
        assert seen.headers["X-Api-Key"] == HEADER
        assert seen.query == f"trace=1&api_key={QUERY}"

        await eventually(cache.exists, what="the cache written")
        data = cache.read_bytes()
        assert b"sealed_secrets" in data
        assert stat.S_IMODE(cache.stat().st_mode) == 0o600
        raw = await _kv_bytes(settings)
        for secret in SECRETS:
            assert secret.encode() not in data, "clear secret in the cache file"
            assert secret.encode() not in raw, "clear secret in the KV"

        # A new token is known (and cut out of log lines) as soon as it is published.
        assert (await admin.patch("/v1.0/backends/b1", json={"BearerToken": ROTATED})).status_code == 200
        for known in (cp.plane.known_secrets, dp.app.state.known_secrets):
            await eventually(lambda k=known: k.redact(ROTATED) == "REDACTED", what="the new token known")
    # The cache alone (NATS away) still carries what the backend needs: the newest token.
    offline = _dp_settings(settings, snapshot_cache=cache, nats_url="nats://127.0.0.1:9")
    async with running_dataplane(offline) as dp, httpx.AsyncClient() as client:
        await _applied(dp)
        assert (await client.post(dp.url + "/api/generate", json=GENERATE)).status_code == 200
    assert rec.seen[-1].headers["Authorization"] == f"Bearer {ROTATED}"


async def test_a_data_plane_with_the_wrong_key_does_not_use_the_backend_and_says_why(
    settings: Settings, rec: Recorder
) -> None:
    wrong = load_keyring(secrets.token_urlsafe(32))
    rotated = load_keyring(secrets.token_urlsafe(32), previous=TEST_SECRETS_KEY)
    async with (
        _configured(settings, rec) as (admin, _),
        running_dataplane(_dp_settings(settings, secrets=wrong)) as bad,
        running_dataplane(_dp_settings(settings, secrets=rotated)) as rotating,
    ):
        await _applied(bad)
        await _applied(rotating)
        async with httpx.AsyncClient() as client:
            refused = await client.post(bad.url + "/api/generate", json=GENERATE)
            assert refused.status_code >= 500 and rec.seen == []  # never sent without its credentials
            served = await client.post(rotating.url + "/api/generate", json=GENERATE)
            assert served.status_code == 200 and rec.seen[-1].headers["X-Api-Key"] == HEADER
        error = bad.app.state.error
        assert "'b1'" in error and TEST_KEYRING.current is not None and TEST_KEYRING.current.id in error
        assert "OLLAMAFLOW_SECRETS_KEY" in error
        assert rotating.app.state.error == ""

        async def reported() -> bool:
            planes = (await admin.get("/v1.0/dataplanes")).json()
            return any(
                p["Id"] == bad.app.settings.dataplane_id and "'b1'" in p["SnapshotError"] for p in planes
            )

        await eventually(reported, within=30, what="the wrong key in the data plane's report")
        explained = await admin.post("/v1.0/frontends/f/explain", json={"Model": "echo"})
        assert explained.status_code == 200


async def _raw_secrets(settings: Settings) -> tuple[str, ...]:
    """Backend b1's secret columns as Postgres stores them (what a dump or a backup holds)."""
    engine = create_async_engine(settings.database_url)
    try:
        async with engine.connect() as conn:
            query = "SELECT bearer_token, querystring, headers::text FROM backends WHERE identifier = 'b1'"
            row = await conn.execute(sa.text(query))
            return tuple(value or "" for value in row.one())
    finally:
        await engine.dispose()


async def _store_in_clear(settings: Settings) -> None:
    """Backend b1's secrets as a version before sealing at rest stored them."""
    engine = create_async_engine(settings.database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "UPDATE backends SET bearer_token = :token, querystring = :query, "
                    "headers = CAST(:headers AS jsonb) WHERE identifier = 'b1'"
                ),
                {"token": BEARER, "query": f"api_key={QUERY}", "headers": f'{{"X-Api-Key": "{HEADER}"}}'},
            )
    finally:
        await engine.dispose()


async def test_stored_secrets_are_sealed_in_postgres_and_clear_ones_are_sealed_at_start(
    settings: Settings, rec: Recorder
) -> None:
    async with _configured(settings, rec) as (admin, _):
        stored = await _raw_secrets(settings)
        shown = (await admin.get("/v1.0/backends/b1")).json()
    assert all(value.strip('"').startswith("v1.") for value in stored), stored
    assert not any(secret in value for value in stored for secret in SECRETS)
    assert shown["HasBearerToken"] is True and shown["Headers"] == {"X-Api-Key": "<redacted>"}
    assert shown["Querystring"] == "api_key=<redacted>"

    await _store_in_clear(settings)  # as an older version left them
    with running_controlplane(settings):
        pass
    assert not any(secret in value for value in await _raw_secrets(settings) for secret in SECRETS)
    async with running_dataplane(_dp_settings(settings)) as dp, _configured_again(settings) as admin:
        await _applied(dp)
        async with httpx.AsyncClient() as client:
            assert (await client.post(dp.url + "/api/generate", json=GENERATE)).status_code == 200
        seen = rec.seen[-1]
        assert seen.headers["Authorization"] == f"Bearer {BEARER}" and seen.headers["X-Api-Key"] == HEADER
        assert (await admin.get("/v1.0/backends/b1")).json()["HasBearerToken"] is True


@contextlib.asynccontextmanager
async def _configured_again(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    with running_controlplane(settings) as running:
        async with httpx.AsyncClient(
            base_url=running.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        ) as admin:
            yield admin


async def test_a_new_key_re_seals_what_the_previous_one_sealed(settings: Settings, rec: Recorder) -> None:
    async with _configured(settings, rec):
        before = await _raw_secrets(settings)
    new_key = secrets.token_urlsafe(32)
    rotated = dataclasses.replace(settings, secrets=load_keyring(new_key, previous=TEST_SECRETS_KEY))
    with running_controlplane(rotated):
        pass
    after = await _raw_secrets(settings)
    new_id = load_keyring(new_key).ids()[0]
    assert all(value.strip('"').split(".")[1] == new_id for value in after), after
    assert after != before
    with running_controlplane(dataclasses.replace(settings, secrets=load_keyring(new_key))) as running:
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}) as admin:
            shown = (await admin.get(running.url + "/v1.0/backends/b1")).json()
    assert shown["HasBearerToken"] is True and shown["Headers"] == {"X-Api-Key": "<redacted>"}


async def test_a_control_plane_without_the_key_of_stored_secrets_stays_starting_and_says_which(
    settings: Settings, rec: Recorder
) -> None:
    async with _configured(settings, rec):
        pass
    keyless = dataclasses.replace(settings, secrets=load_keyring())
    assert TEST_KEYRING.current is not None
    with running_controlplane(keyless, wait_ready=None) as running:
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}) as client:

            async def refused() -> bool:
                ready = (await client.get(running.url + "/readyz")).json()
                return TEST_KEYRING.current.id in ready.get("detail", "")

            await eventually(refused, within=30, what="the missing key named")
            ready = (await client.get(running.url + "/readyz")).json()
            listed = await client.get(running.url + "/v1.0/backends")
    assert ready["status"] == "starting" and "OLLAMAFLOW_SECRETS_KEY" in ready["detail"]
    assert listed.status_code == 503 and TEST_KEYRING.current.id in listed.json()["Description"]
    # Nothing was lost: the control plane with the key reads them as before.
    assert not any(secret in value for value in await _raw_secrets(settings) for secret in SECRETS)


async def test_a_control_plane_without_a_key_withholds_secrets_stored_in_clear(
    settings: Settings, rec: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    async with _configured(settings, rec):  # stored by a control plane with a key...
        pass
    await _store_in_clear(settings)  # ...or in clear, by an older version
    keyless = dataclasses.replace(settings, secrets=load_keyring())
    with running_controlplane(keyless):  # published by a control plane without one
        async with running_dataplane(_dp_settings(settings)) as dp:
            await eventually(lambda: "'b1'" in dp.app.state.error, within=30, what="the backend refused")
            assert "left out of the snapshot" in dp.app.state.error
            async with httpx.AsyncClient() as client:
                assert (await client.post(dp.url + "/api/generate", json=GENERATE)).status_code >= 500
            assert rec.seen == []
    assert (
        "have a BearerToken, Headers or Querystring but this control plane has no secrets key" in caplog.text
    )
