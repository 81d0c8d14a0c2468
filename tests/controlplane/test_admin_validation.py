"""What the admin API accepts as a host, a port and a frontend's Hostname, over real HTTP against a real
database: host names or IP literals only, ports 1-65535, one frontend per Hostname."""

from __future__ import annotations

import asyncio

import httpx
import pytest

pytestmark = pytest.mark.usefixtures("controlplane")

NOT_HOSTS = [
    "user:pw@evil",  # userinfo: the URL would go elsewhere
    "127.0.0.1:22",  # a port of its own
    "a?b#c",  # a query and fragment: the URL would target host "a"
    "file:",
    "a/b",
    "host name",
    "-leading.example",
    "trailing-.example",
    "dot.",
    "a..b",
    "[::1]",  # IPv6 goes without brackets
    "fe80::1%eth0",  # no zones
    "1:2:3:4:5:6:7:8:9",
    "localhost\n",
    "",
    "x" * 64 + ".example",  # a DNS label has at most 63 characters
]
HOSTS = ["localhost", "127.0.0.1", "::1", "2001:db8::8a2e:370:7334", "ollama_1", "GPU-7.Lab.Example", "a"]


@pytest.mark.parametrize("hostname", NOT_HOSTS)
async def test_a_backend_hostname_must_be_a_host(admin: httpx.AsyncClient, hostname: str) -> None:
    resp = await admin.put("/v1.0/backends", json={"Identifier": "b1", "Hostname": hostname})
    assert resp.status_code == 400, resp.text
    assert resp.json()["Description"].startswith("Hostname")
    await admin.put("/v1.0/backends", json={"Identifier": "b1"})
    resp = await admin.patch("/v1.0/backends/b1", json={"Hostname": hostname})
    assert resp.status_code == 400, resp.text


@pytest.mark.parametrize("hostname", HOSTS)
async def test_host_names_and_ip_literals_are_accepted(admin: httpx.AsyncClient, hostname: str) -> None:
    resp = await admin.put("/v1.0/backends", json={"Identifier": "b1", "Hostname": hostname, "Port": 1})
    assert resp.status_code == 201, resp.text
    expected = f"[{hostname}]" if ":" in hostname else hostname
    assert resp.json()["UrlPrefix"] == f"http://{expected}:1"
    resp = await admin.put("/v1.0/frontends", json={"Identifier": "f1", "Hostname": hostname})
    assert resp.status_code == 201, resp.text


@pytest.mark.parametrize("hostname", NOT_HOSTS)
async def test_a_frontend_hostname_must_be_a_host_or_star(admin: httpx.AsyncClient, hostname: str) -> None:
    resp = await admin.put("/v1.0/frontends", json={"Identifier": "f1", "Hostname": hostname})
    assert resp.status_code == 400, resp.text
    assert resp.json()["Description"].startswith("Hostname")


@pytest.mark.parametrize("port", [0, -1, 65536])
async def test_ports_are_1_to_65535(admin: httpx.AsyncClient, port: int) -> None:
    resp = await admin.put("/v1.0/backends", json={"Identifier": "b1", "Port": port})
    assert resp.status_code == 400, resp.text
    assert "Port" in resp.json()["Description"]
    for good in (1, 65535):
        resp = await admin.put(
            "/v1.0/backends/b1" if good == 65535 else "/v1.0/backends",
            json={"Identifier": "b1", "Port": good},
        )
        assert resp.status_code in (200, 201), resp.text


def _conflict(resp: httpx.Response, owner: str) -> None:
    assert resp.status_code == 409, resp.text
    body = resp.json()
    assert (body["Error"], body["StatusCode"]) == ("Conflict", 409)
    assert body["Description"].startswith("Hostname") and f"'{owner}'" in body["Description"]


@pytest.mark.parametrize(("first", "second"), [("*", "*"), ("chat.example", "Chat.EXAMPLE"), ("::1", "::1")])
async def test_a_frontend_hostname_is_unique(admin: httpx.AsyncClient, first: str, second: str) -> None:
    assert (
        await admin.put("/v1.0/frontends", json={"Identifier": "f1", "Hostname": first})
    ).status_code == 201
    # Create, with the Hostname given or (for "*") by default.
    _conflict(await admin.put("/v1.0/frontends", json={"Identifier": "f2", "Hostname": second}), "f1")
    if first == "*":
        _conflict(await admin.put("/v1.0/frontends", json={"Identifier": "f2"}), "f1")
    assert (await admin.head("/v1.0/frontends/f2")).status_code == 404
    # Replace and patch of another frontend.
    body = {"Identifier": "f2", "Hostname": "other.example"}
    assert (await admin.put("/v1.0/frontends", json=body)).status_code == 201
    _conflict(await admin.put("/v1.0/frontends/f2", json={"Hostname": second}), "f1")
    _conflict(await admin.patch("/v1.0/frontends/f2", json={"Hostname": second}), "f1")
    assert (await admin.get("/v1.0/frontends/f2")).json()["Hostname"] == "other.example"
    # A frontend may keep its own Hostname, in any case.
    assert (await admin.put("/v1.0/frontends/f1", json={"Hostname": second})).status_code == 200
    assert (await admin.patch("/v1.0/frontends/f1", json={"Name": "renamed"})).status_code == 200
    # Once it is free, it can be taken.
    assert (await admin.delete("/v1.0/frontends/f1")).status_code == 204
    assert (await admin.patch("/v1.0/frontends/f2", json={"Hostname": second})).status_code == 200


async def test_racing_writes_of_one_hostname_leave_one_frontend(admin: httpx.AsyncClient) -> None:
    """The unique index holds where the check and a concurrent write interleave: one 201, the rest 409."""
    bodies = [{"Identifier": f"f{i}", "Hostname": "race.example"} for i in range(8)]
    answers = await asyncio.gather(*(admin.put("/v1.0/frontends", json=body) for body in bodies))
    assert sorted(r.status_code for r in answers) == [201] + [409] * 7, [r.text for r in answers]
    assert all(r.json()["Description"].startswith("Hostname") for r in answers if r.status_code == 409)
    assert len((await admin.get("/v1.0/frontends")).json()) == 1


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("/v1.0/backends", {"Identifier": "b1", "Hostname": "host name"}, "Hostname: must be a host name ("),
        ("/v1.0/backends", {"Identifier": "a b"}, "Identifier: must be 1-128 characters, no whitespace"),
        ("/v1.0/backends", {"Identifier": "b1", "HealthCheckUrl": "x"}, "HealthCheckUrl: must be a path"),
        ("/v1.0/frontends", {"Identifier": "f1", "Hostname": "a/b"}, "Hostname: must be the Host this"),
        ("/v1.0/backends", {"Identifier": "b1", "Headers": {"a b": "v"}}, "Headers (a key): must be an HTTP"),
    ],
)
async def test_a_value_off_its_pattern_is_explained_in_words(
    admin: httpx.AsyncClient, path: str, body: dict, expected: str
) -> None:
    resp = await admin.put(path, json=body)
    assert resp.status_code == 400, resp.text
    description = resp.json()["Description"]
    assert description.startswith(expected), description
    assert "regex" not in description
