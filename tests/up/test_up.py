"""``ollamaflow up`` as a user runs it: a real subprocess with its own embedded PostgreSQL and NATS,
answered through the official ollama client, stopped with SIGTERM and started again on the same data
directory."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import stat
import time
from pathlib import Path

import httpx
import ollama
import pytest

from ollamaflow.processes import free_port, process_is_live
from shared.bus import Bus
from shared.errors import BusAuthError
from tests.up.harness import UpProcess, child_pid, descendants, free_port_pair, start_up

pytestmark = pytest.mark.slow

READY = r"^up\s+\| ready: "
TOKEN = r"^up\s+\| admin token:\s+(\S+)"
NATS = r"^up\s+\| nats:\s+(\S+) \(embedded"
# Secrets `up` keeps in its data directory, each readable by the owner only.
SECRETS = (
    "admin-token",
    "nats-controlplane.password",
    "nats-dataplane.password",
    "keys/snapshot-signing.pem",
)


def _admin(port: int, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


def _preflight(url: str, origin: str, method: str) -> httpx.Response:
    headers = {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    return httpx.options(url, headers=headers, timeout=10)


def _cors_allows(cp_port: int, dataplane: str, origin: str) -> tuple[bool, bool]:
    """Whether a page on ``origin`` may call the admin API and the data plane (by their preflights)."""
    admin = _preflight(f"http://127.0.0.1:{cp_port}/v1.0/frontends", origin, "PUT")
    proxy = _preflight(f"{dataplane}/api/chat", origin, "POST")
    return (
        admin.status_code == 204 and admin.headers.get("access-control-allow-origin") == origin,
        proxy.status_code == 204 and proxy.headers.get("access-control-allow-origin") == origin,
    )


def _ask(dataplane: str) -> None:
    """Chat (streamed), generate and embed through the data plane, with the official client."""
    client = ollama.Client(host=dataplane, timeout=30)
    parts = list(client.chat(model="llama3.2", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert parts[-1].done
    assert "".join(p.message.content or "" for p in parts).strip()
    assert client.generate(model="llama3.2", prompt="hi").response.strip()
    assert len(client.embed(model="all-minilm", input=["a", "b"]).embeddings) == 2


SEALED = "up-bearer-s3cret-6e1f"


def _serve_through_sealed_secrets(admin: httpx.Client, dataplane: str) -> None:
    """A backend with a bearer token and a key header answers through the data plane: the data plane
    opened its sealed secrets with the key ``up`` gave it (else the backend would not be used)."""
    sim = admin.get("/v1.0/backends/demo-sim-1").json()
    backend = {
        "Identifier": "sealed",
        "Hostname": sim["Hostname"],
        "Port": sim["Port"],
        "BearerToken": SEALED,
    }
    backend["Headers"] = {"X-Api-Key": SEALED}
    assert admin.put("/v1.0/backends", json=backend).status_code == 201
    frontend = {"Identifier": "sealed", "Hostname": "sealed.example", "Backends": ["sealed"]}
    assert admin.put("/v1.0/frontends", json=frontend).status_code == 201
    deadline = time.monotonic() + 30
    while True:
        answer = httpx.post(
            dataplane + "/api/generate",
            json={"model": "llama3.2", "prompt": "hi", "stream": False},
            headers={"Host": "sealed.example"},
            timeout=30,
        )
        if answer.status_code == 200 and answer.headers.get("x-ollamaflow-backend") == "sealed":
            return
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.2)


def _stop_and_check_nothing_left(up: UpProcess) -> None:
    children = descendants(up.proc.pid)
    assert children, "up has no child processes"
    assert up.terminate() == 0, up.output[-4000:]
    left = {pid for pid in children if process_is_live(pid)}
    assert not left, f"processes left after SIGTERM: {left}"
    assert "up           | stopped" in up.output


def test_up_demo_answers_stops_cleanly_and_keeps_state(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port, cp_port = free_port(), free_port()
    args = ["--demo", "--data-dir", str(data_dir), "--port", str(port), "--controlplane-port", str(cp_port)]
    dataplane = f"http://127.0.0.1:{port}"

    up = start_up(args, tmp_path / "up-1.log")
    try:
        up.wait_for(READY)
        token = up.wait_for(TOKEN).group(1)
        token_file = data_dir / "admin-token"
        assert token_file.read_text().strip() == token
        assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600

        _ask(dataplane)
        # OllamaFlow's web UI (port 3000) may call both planes out of the box; other pages may not.
        assert _cors_allows(cp_port, dataplane, "http://localhost:3000") == (True, True)
        assert _cors_allows(cp_port, dataplane, "http://127.0.0.1:3000") == (True, True)
        assert _cors_allows(cp_port, dataplane, "http://elsewhere.example") == (False, False)
        assert httpx.get(f"http://127.0.0.1:{cp_port}/").json()["admin_api"] == "/v1.0"
        for secret in SECRETS:
            assert stat.S_IMODE(os.stat(data_dir / secret).st_mode) == 0o600, secret
        secrets = {name: (data_dir / name).read_bytes() for name in SECRETS}
        # The embedded NATS lets nobody in without a password (the planes got theirs from `up`).
        with pytest.raises(BusAuthError):
            asyncio.run(Bus(up.wait_for(NATS).group(1)).connect())
        with _admin(cp_port, token) as admin:
            frontends = admin.get("/v1.0/frontends")
            assert frontends.status_code == 200, frontends.text
            assert "demo" in {f["Identifier"] for f in frontends.json()}
            backends = {b["Identifier"] for b in admin.get("/v1.0/backends").json()}
            assert {"demo-sim-1", "demo-sim-2", "demo-sim-3"} <= backends
            created = admin.put(
                "/v1.0/frontends",
                json={
                    "Identifier": "kept",
                    "Name": "kept",
                    "Hostname": "kept.example",
                    "Backends": ["demo-sim-1"],
                },
            )
            assert created.status_code == 201, created.text
            _serve_through_sealed_secrets(admin, dataplane)
        assert httpx.get(f"http://127.0.0.1:{cp_port}/v1.0/frontends").status_code == 401
        # Both planes got the key made in the data directory; the caches hold the secrets sealed only.
        assert stat.S_IMODE(os.stat(data_dir / "secrets-key").st_mode) == 0o600
        cache = data_dir / "dataplane-1.snapshot"
        assert stat.S_IMODE(os.stat(cache).st_mode) == 0o600
        assert SEALED.encode() not in cache.read_bytes() and b"sealed_secrets" in cache.read_bytes()
        _stop_and_check_nothing_left(up)
    finally:
        if up.proc.poll() is None:
            up.proc.kill()

    # Same data directory, same ports: the database, the token and the demo all come back, and the
    # demo backends now point at this run's simulators (their ports changed).
    again = start_up(args, tmp_path / "up-2.log")
    try:
        again.wait_for(READY)
        assert again.wait_for(TOKEN).group(1) == token
        assert {name: (data_dir / name).read_bytes() for name in SECRETS} == secrets  # reused
        with _admin(cp_port, token) as admin:
            kept = admin.get("/v1.0/frontends/kept")
            assert kept.status_code == 200, kept.text
            assert kept.json()["Hostname"] == "kept.example"
        _ask(dataplane)
        _stop_and_check_nothing_left(again)
    finally:
        if again.proc.poll() is None:
            again.proc.kill()


def test_up_two_dataplanes_of_two_workers_with_tokens_from_the_environment(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port = free_port_pair()
    cp_port = free_port()
    while cp_port in (port, port + 1):
        cp_port = free_port()
    args = [
        "--dataplanes",
        "2",
        "--workers",
        "2",
        "--data-dir",
        str(data_dir),
        "--port",
        str(port),
        "--controlplane-port",
        str(cp_port),
    ]

    key = secrets.token_urlsafe(32)
    env = {"OLLAMAFLOW_ADMIN_TOKENS": "env-token-1,env-token-2", "OLLAMAFLOW_SECRETS_KEY": key}
    # CORS as the environment says: none for the admin API, another origin for the data planes.
    env |= {"OLLAMAFLOW_CORS_ORIGINS": "none", "OLLAMAFLOW_DATAPLANE_CORS_ORIGINS": "https://ui.example"}
    up = start_up(args, tmp_path / "up.log", env=env)
    try:
        up.wait_for(READY)
        assert "admin token:   from OLLAMAFLOW_ADMIN_TOKENS" in up.output
        assert "env-token-1" not in up.output
        assert not (data_dir / "admin-token").exists()
        # The secrets key from the environment reaches both planes as it is: no key file, never printed.
        assert not (data_dir / "secrets-key").exists() and key not in up.output
        for dp_port in (port, port + 1):
            assert httpx.get(f"http://127.0.0.1:{dp_port}/readyz").status_code == 200
        dataplane = f"http://127.0.0.1:{port}"
        assert _cors_allows(cp_port, dataplane, "http://localhost:3000") == (False, False)
        assert _cors_allows(cp_port, dataplane, "https://ui.example") == (False, True)
        with _admin(cp_port, "env-token-2") as admin:
            assert admin.get("/v1.0/frontends").status_code == 200
            # Every worker of both data planes holds it: the control plane takes a secret, each opens it.
            backend = {"Identifier": "keyed", "Hostname": "127.0.0.1", "Port": 9, "BearerToken": "t0ken"}
            assert admin.put("/v1.0/backends", json=backend).status_code == 201
            deadline = time.monotonic() + 30
            while True:
                snapshot = admin.get("/v1.0/snapshot").json()
                if any(b["id"] == "keyed" for b in snapshot["Content"]["backends"]):
                    break
                assert time.monotonic() < deadline, snapshot
                time.sleep(0.1)
            revision = snapshot["Revision"]
            while True:
                planes = admin.get("/v1.0/dataplanes").json()
                applied = [p for p in planes if p["Live"] and p["AppliedRevision"] >= revision]
                if len(applied) == 4:
                    break
                assert time.monotonic() < deadline, planes
                time.sleep(0.2)
            assert [p["SnapshotError"] for p in applied] == [""] * 4
            workers = {f"dataplane-{n}-w{k}" for n in (1, 2) for k in (0, 1)}
            assert {p["Id"] for p in applied} == workers
        _stop_and_check_nothing_left(up)
    finally:
        if up.proc.poll() is None:
            up.proc.kill()


def test_up_exits_non_zero_when_a_child_fails_at_start_up(tmp_path: Path) -> None:
    # Nothing listens on these ports, so the migration cannot reach the database.
    dead_pg, dead_nats = free_port(), free_port()
    args = ["--data-dir", str(tmp_path / "data"), "--port", str(free_port())]
    args += ["--controlplane-port", str(free_port()), "--nats-url", f"nats://127.0.0.1:{dead_nats}"]
    args += ["--database-url", f"postgresql://postgres@127.0.0.1:{dead_pg}/postgres"]
    up = start_up(args, tmp_path / "up.log")
    assert up.proc.wait(timeout=120) == 1
    assert "error: migrate exited with code" in up.output
    assert not (tmp_path / "data" / "postgres").exists()  # given URLs: no embedded server


def _cluster(url: str, token: str) -> dict[str, object]:
    """The control plane's /v1.0/cluster; empty while it does not answer (e.g. restarting)."""
    try:
        response = httpx.get(url + "/v1.0/cluster", headers={"Authorization": f"Bearer {token}"}, timeout=5)
    except httpx.HTTPError:
        return {}
    return response.json() if response.status_code == 200 else {}


def _views(urls: list[str], token: str) -> list[dict[str, object]]:
    return [_cluster(url, token) for url in urls]


def _leader_answers(urls: list[str], token: str) -> bool:
    return any(view.get("IsLeader") for view in _views(urls, token))


def _one_leader_named(urls: list[str], token: str) -> bool:
    views = _views(urls, token)
    return all(views) and len({view.get("Leader") for view in views}) == 1


def test_up_two_controlplanes_one_leads_and_a_leader_is_back_when_it_is_killed(tmp_path: Path) -> None:
    port = free_port()
    args = ["--demo", "--controlplanes", "2", "--data-dir", str(tmp_path / "data"), "--port", str(port)]
    args += ["--controlplane-port", str(free_port())]
    up = start_up(args, tmp_path / "up.log")
    try:
        up.wait_for(READY)
        assert "and 2 control planes answer" in up.output
        token = up.wait_for(TOKEN).group(1)
        urls = re.findall(r"^up\s+\| control plane: (\S+)", up.output, re.MULTILINE)
        assert len(urls) == 2
        views = {url: _cluster(url, token) for url in urls}
        assert {v["Replica"] for v in views.values()} == {"controlplane", "controlplane-2"}
        leaders = {v["Leader"] for v in views.values()}
        assert len(leaders) == 1 and sum(bool(v["IsLeader"]) for v in views.values()) == 1
        leader_url = next(url for url, v in views.items() if v["IsLeader"])
        other_url = next(url for url in urls if url != leader_url)

        leader_port = leader_url.rsplit(":", 1)[1]
        pid = child_pid(up.proc.pid, "controlplane", "--port", leader_port)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        # Either the other replica takes over once the lease expires, or up restarts the killed one
        # first (0.5 s) and it takes its own lease back at once: a leader again, either way.
        deadline = time.monotonic() + 20
        while not _leader_answers(urls, token):
            assert time.monotonic() < deadline, up.output[-4000:]
            time.sleep(0.1)
        with httpx.Client(
            base_url=other_url, headers={"Authorization": f"Bearer {token}"}, timeout=10
        ) as admin:
            body = {"Identifier": "after", "Hostname": "after.example", "Backends": ["demo-sim-1"]}
            assert admin.put("/v1.0/frontends", json=body).status_code == 201
        dataplane = f"http://127.0.0.1:{port}"
        while True:
            answer = httpx.post(
                dataplane + "/api/generate",
                json={"model": "llama3.2", "prompt": "hi", "stream": False},
                headers={"Host": "after.example"},
                timeout=30,
            )
            if answer.status_code == 200 and answer.headers.get("x-ollamaflow-backend") == "demo-sim-1":
                break
            assert time.monotonic() < deadline + 20, answer.text
            time.sleep(0.1)
        # up started the killed replica again; it follows now.
        up.wait_for(r"controlplane\S* exited with code -9; restarting")
        deadline = time.monotonic() + 30
        while not (_leader_answers(urls, token) and _one_leader_named(urls, token)):
            assert time.monotonic() < deadline, up.output[-4000:]
            time.sleep(0.2)
        _stop_and_check_nothing_left(up)
    finally:
        if up.proc.poll() is None:
            up.proc.kill()
