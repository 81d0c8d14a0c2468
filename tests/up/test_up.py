"""``ollamaflow up`` as a user runs it: a real subprocess with its own embedded PostgreSQL and NATS,
answered through the official ollama client, stopped with SIGTERM and started again on the same data
directory."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import httpx
import ollama
import pytest

from ollamaflow.processes import free_port, process_is_live
from shared.bus import Bus
from shared.errors import BusAuthError
from tests.up.harness import UpProcess, descendants, free_port_pair, start_up

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


def _ask(dataplane: str) -> None:
    """Chat (streamed), generate and embed through the data plane, with the official client."""
    client = ollama.Client(host=dataplane, timeout=30)
    parts = list(client.chat(model="llama3.2", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert parts[-1].done
    assert "".join(p.message.content or "" for p in parts).strip()
    assert client.generate(model="llama3.2", prompt="hi").response.strip()
    assert len(client.embed(model="all-minilm", input=["a", "b"]).embeddings) == 2


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
        assert httpx.get(f"http://127.0.0.1:{cp_port}/v1.0/frontends").status_code == 401
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


def test_up_two_dataplanes_with_tokens_from_the_environment(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port = free_port_pair()
    cp_port = free_port()
    while cp_port in (port, port + 1):
        cp_port = free_port()
    args = [
        "--dataplanes",
        "2",
        "--data-dir",
        str(data_dir),
        "--port",
        str(port),
        "--controlplane-port",
        str(cp_port),
    ]

    up = start_up(args, tmp_path / "up.log", env={"OLLAMAFLOW_ADMIN_TOKENS": "env-token-1,env-token-2"})
    try:
        up.wait_for(READY)
        assert "admin token:   from OLLAMAFLOW_ADMIN_TOKENS" in up.output
        assert "env-token-1" not in up.output
        assert not (data_dir / "admin-token").exists()
        for dp_port in (port, port + 1):
            assert httpx.get(f"http://127.0.0.1:{dp_port}/readyz").status_code == 200
        with _admin(cp_port, "env-token-2") as admin:
            assert admin.get("/v1.0/frontends").status_code == 200
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
