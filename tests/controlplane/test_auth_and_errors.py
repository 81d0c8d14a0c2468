"""Admin authentication and the error shape: every failure is OllamaFlow's JSON, never a 500."""

from __future__ import annotations

import inspect

import httpx
import pytest
from litestar.routes import HTTPRoute

from controlplane.app import create_app
from controlplane.settings import Settings
from tests.controlplane.conftest import OTHER_TOKEN, TOKEN

pytestmark = pytest.mark.usefixtures("controlplane")


def _assert_error(resp: httpx.Response, status: int, kind: str) -> dict[str, object]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert body["Error"] == kind
    assert body["StatusCode"] == status
    assert isinstance(body["Message"], str) and body["Message"]
    return body


BAD_CREDENTIALS = [
    {},
    {"Authorization": "Bearer wrong-token"},
    {"Authorization": f"Bearer {TOKEN}x"},
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": TOKEN},
    {"Authorization": "Bearer"},
]
ADMIN_REQUESTS = [
    ("GET", "/v1.0/frontends"),
    ("GET", "/v1.0/backends/b1"),
    ("PUT", "/v1.0/backends"),
    ("PATCH", "/v1.0/frontends/f1"),
    ("DELETE", "/v1.0/backends/b1"),
    ("GET", "/v1.0/dataplanes"),
    ("GET", "/v1.0/snapshot"),
    ("GET", "/v1.0/no-such-route"),
    ("GET", "/v1.0"),
]


async def test_admin_routes_need_a_valid_token(anonymous: httpx.AsyncClient) -> None:
    for headers in BAD_CREDENTIALS:
        for method, path in ADMIN_REQUESTS:
            resp = await anonymous.request(method, path, headers=headers, json={"Identifier": "x"})
            body = _assert_error(resp, 401, "AuthenticationFailed")
            assert body["Message"] == "Your authentication material was not accepted."
            assert resp.headers["www-authenticate"] == "Bearer"
    # Nothing was written on the way.
    assert (await anonymous.get("/v1.0/backends", headers={"Authorization": f"Bearer {TOKEN}"})).json() == []


async def test_head_without_a_token_is_401_without_a_body(anonymous: httpx.AsyncClient) -> None:
    resp = await anonymous.head("/v1.0/frontends/f1")
    assert resp.status_code == 401 and resp.content == b""


@pytest.mark.parametrize("token", [TOKEN, OTHER_TOKEN])
async def test_every_configured_token_is_accepted(anonymous: httpx.AsyncClient, token: str) -> None:
    resp = await anonymous.get("/v1.0/frontends", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200 and resp.json() == []
    # The scheme is case-insensitive, the token is not.
    assert (
        await anonymous.get("/v1.0/frontends", headers={"Authorization": f"bearer {token}"})
    ).status_code == 200
    resp = await anonymous.get("/v1.0/frontends", headers={"Authorization": f"Bearer {token.upper()}"})
    assert resp.status_code == 401


async def test_unknown_admin_routes_are_404_after_auth(admin: httpx.AsyncClient) -> None:
    _assert_error(await admin.get("/v1.0/no-such-route"), 404, "NotFound")
    _assert_error(await admin.get("/v1.0/frontends/f1/extra"), 404, "NotFound")
    _assert_error(await admin.get("/nowhere"), 404, "NotFound")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", "/v1.0/frontends", {"GET", "PUT"}),
        ("POST", "/v1.0/backends/b1", {"GET", "HEAD", "PUT", "PATCH", "DELETE"}),
        ("DELETE", "/v1.0/snapshot", {"GET"}),
        ("POST", "/healthz", {"GET"}),
    ],
)
async def test_wrong_method_is_405_with_allow(
    admin: httpx.AsyncClient, method: str, path: str, allowed: set[str]
) -> None:
    resp = await admin.request(method, path, json={})
    _assert_error(resp, 405, "MethodNotAllowed")
    # RFC 9110: a 405 says which methods the resource supports.
    assert allowed <= {m.strip() for m in resp.headers["Allow"].split(",")}
    assert method not in resp.headers["Allow"]


@pytest.mark.parametrize(
    ("content", "named"),
    [
        (b"{not json", "JSON"),
        (b"", "request body"),
        (b"[1, 2]", "request body"),
        (b'"text"', "request body"),
        (b'{"Identifier": "f1", "TimeoutMs": "60000"}', "TimeoutMs"),
        (b'{"Identifier": "f1", "Active": "true"}', "Active"),
        (b'{"Identifier": "f1", "Active": 1}', "Active"),
        (b'{"Identifier": 7}', "Identifier"),
        (b'{"Identifier": "f1", "RequiredModels": [1]}', "RequiredModels"),
    ],
)
async def test_bad_bodies_are_400_in_ollamaflow_shape(
    admin: httpx.AsyncClient, content: bytes, named: str
) -> None:
    resp = await admin.put("/v1.0/frontends", content=content, headers={"Content-Type": "application/json"})
    body = _assert_error(resp, 400, "BadRequest")
    assert named in str(body["Description"])
    assert "Traceback" not in resp.text


async def test_too_large_bodies_are_413(admin: httpx.AsyncClient) -> None:
    resp = await admin.put("/v1.0/frontends", content=b" " * (11 * 1024 * 1024))
    _assert_error(resp, 413, "TooLarge")


def test_guards_run_on_the_event_loop(settings: Settings) -> None:
    """Litestar runs a guard that is a plain function in a worker thread: a hop there and back on every
    admin request, before anything else it does. Every guard of the app is a coroutine function."""
    app = create_app(settings)
    handlers = [h for route in app.routes if isinstance(route, HTTPRoute) for h in route.route_handlers]
    guards = [guard for handler in handlers for guard in handler.resolve_guards()]
    assert len({id(guard) for guard in guards}) >= 2  # the admin token's and the readiness one
    assert all(inspect.iscoroutinefunction(guard) for guard in guards)
