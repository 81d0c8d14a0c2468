"""``/healthz``, ``/readyz`` and the OpenAPI schema: reachable without a token."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from controlplane.settings import Settings
from tests.controlplane.harness import drop_database, fresh_database, running_controlplane


async def test_healthz_and_readyz(anonymous: httpx.AsyncClient) -> None:
    assert (await anonymous.get("/healthz")).json() == {"status": "ok"}
    resp = await anonymous.get("/readyz")
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "ok" and body["replica"] and body["role"] in ("leader", "follower")


async def test_openapi_schema_and_docs_pages(anonymous: httpx.AsyncClient) -> None:
    resp = await anonymous.get("/schema/openapi.json")
    assert resp.status_code == 200
    schema = resp.json()
    paths = schema["paths"]
    assert {"put", "get"} <= set(paths["/v1.0/frontends"])
    assert {"get", "put", "patch", "delete", "head"} <= set(paths["/v1.0/backends/{identifier}"])
    assert "/v1.0/dataplanes" in paths and "/v1.0/snapshot" in paths
    assert schema["components"]["securitySchemes"]["BearerToken"]["scheme"] == "bearer"
    backend_out = schema["components"]["schemas"]["BackendOut"]["properties"]
    assert "HasBearerToken" in backend_out and "BearerToken" not in backend_out
    assert "BearerToken" in schema["components"]["schemas"]["BackendIn"]["properties"]
    # Header and query-string values are write-only too, and the schema says so on both sides.
    backend_in = schema["components"]["schemas"]["BackendIn"]["properties"]
    for field in ("Headers", "Querystring"):  # the description may sit in the non-null branch
        assert "never the values" in json.dumps(backend_out[field])
        assert '\\"<redacted>\\" keeps the stored value' in json.dumps(backend_in[field])
    port = schema["components"]["schemas"]["BackendIn"]["properties"]["Port"]
    assert (port["minimum"], port["maximum"]) == (1, 65535)

    # Every documented error answer has OllamaFlow's shape.
    for path, operations in paths.items():
        for method, operation in operations.items():
            for status, response in operation.get("responses", {}).items():
                if status >= "400":
                    assert "ErrorBody" in json.dumps(response), (method, path, status)

    swagger = await anonymous.get("/schema/swagger")
    assert swagger.status_code == 200 and "swagger" in swagger.text.lower()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.usefixtures("clean_database_url")
async def test_readyz_is_503_while_nats_is_unreachable_and_the_api_still_works(settings: Settings) -> None:
    """The database is the source of truth: configuration can be edited while NATS is down."""
    cut_off = Settings(
        database_url=settings.database_url,
        admin_tokens=settings.admin_tokens,
        nats_url=f"nats://127.0.0.1:{_closed_port()}",
        bus_namespace=settings.bus_namespace,
    )
    with running_controlplane(cut_off, wait_ready=False) as running:
        async with httpx.AsyncClient(
            base_url=running.url, headers={"Authorization": f"Bearer {settings.admin_tokens[0]}"}
        ) as client:
            assert (await client.get("/healthz")).status_code == 200
            created = await client.put("/v1.0/backends", json={"Identifier": "b1"})
            assert created.status_code == 201, created.text
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["status"] in ("starting", "unavailable")
            assert "detail" in ready.json()
            # Not NATS: the snapshot view says what is wrong in the admin error shape.
            snapshot = await client.get("/v1.0/snapshot")
            assert snapshot.status_code == 503 and snapshot.json()["Error"] == "ServiceUnavailable"


async def test_losing_the_database_gives_503_in_the_error_shape(
    database_url: str, settings: Settings
) -> None:
    with fresh_database(database_url) as url:
        own = Settings(
            database_url=url,
            admin_tokens=settings.admin_tokens,
            nats_url=settings.nats_url,
            bus_namespace=settings.bus_namespace,
        )
        with running_controlplane(own) as running:
            async with httpx.AsyncClient(
                base_url=running.url, headers={"Authorization": f"Bearer {settings.admin_tokens[0]}"}
            ) as client:
                assert (await client.put("/v1.0/backends", json={"Identifier": "b1"})).status_code == 201
                drop_database(url)  # pulls the rug: open connections are terminated
                for resp in (
                    await client.get("/v1.0/backends"),
                    await client.put("/v1.0/backends", json={"Identifier": "b2"}),
                ):
                    assert resp.status_code == 503, resp.text
                    assert resp.json()["Error"] == "ServiceUnavailable"
                ready = await client.get("/readyz")
                assert ready.status_code == 503 and ready.json()["status"] == "unavailable"
                assert (await client.get("/healthz")).status_code == 200
