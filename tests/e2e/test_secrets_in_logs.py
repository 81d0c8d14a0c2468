"""No backend secret reaches a log line, at DEBUG, in either plane, on success or failure.

A backend is configured with a bearer token, a key header, a header of its own and a query-string
key; the control plane probes it and reads its models, clients chat, list, upload a blob and create a
model through a data plane (the authoring path logs its httpx requests), then the backend dies and
requests fail. Every line both processes wrote must be free of the four secrets.
"""

from __future__ import annotations

import hashlib
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import ollama
import pytest

from tests.support.processes import free_port, ollamaflow, stop, wait_ready
from tests.support.secrets import secrets_env
from tests.support.services import fresh_database
from tests.support.signing import SnapshotKeys

pytestmark = pytest.mark.slow

TOKEN = "secrets-test-admin-token-0123456789"
SECRETS = {
    "BearerToken": "bearer-s3cret-7f3a9c",
    "Headers": "header-s3cret-41d2e8",
    "Custom header": "custom-s3cret-c0ffee",  # a header name no pattern knows as a credential
    "Querystring": "query-s3cret-90b7aa",
}


def _wait(predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def test_backend_secrets_never_reach_a_log_line(
    tmp_path: Path, database_url: str, nats_url: str, bus_namespace: str, snapshot_keys: SnapshotKeys
) -> None:
    with ExitStack() as stack:
        env = snapshot_keys.env() | {
            "OLLAMAFLOW_DATABASE_URL": stack.enter_context(fresh_database(database_url)),
            "OLLAMAFLOW_NATS_URL": nats_url,
            "OLLAMAFLOW_BUS_NAMESPACE": bus_namespace,
            "OLLAMAFLOW_ADMIN_TOKENS": TOKEN,
            "OLLAMAFLOW_LOG_LEVEL": "DEBUG",
            "OLLAMAFLOW_REPORT_INTERVAL": "0.3",
            "OLLAMAFLOW_HEALTH_INTERVAL": "0.3",
            "OLLAMAFLOW_HEALTH_TIMEOUT": "0.5",
            **secrets_env(),
        }
        sim_port, cp_port, dp_port = free_port(), free_port(), free_port()
        sim = stack.enter_context(ollamaflow(["sim", "--port", str(sim_port)], tmp_path / "sim.log"))
        cp = stack.enter_context(
            ollamaflow(["controlplane", "--port", str(cp_port)], tmp_path / "cp.log", env)
        )
        dp_args = ["dataplane", "--host", "127.0.0.1", "--port", str(dp_port), "--id", "dp-secrets"]
        dp = stack.enter_context(ollamaflow(dp_args, tmp_path / "dp.log", env))
        sim_url, cp_url, dp_url = (f"http://127.0.0.1:{p}" for p in (sim_port, cp_port, dp_port))
        wait_ready(sim_url + "/api/version", sim, tmp_path / "sim.log")
        wait_ready(cp_url + "/readyz", cp, tmp_path / "cp.log", timeout=60)
        admin = stack.enter_context(
            httpx.Client(base_url=cp_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        )
        backend = {
            "Identifier": "b",
            "Hostname": "127.0.0.1",
            "Port": sim_port,
            "BearerToken": SECRETS["BearerToken"],
            "Headers": {"X-Api-Key": SECRETS["Headers"], "X-Team-Route": SECRETS["Custom header"]},
            "Querystring": f"api_key={SECRETS['Querystring']}",
        }
        assert admin.put("/v1.0/backends", json=backend).status_code == 201
        frontend = {"Identifier": "f", "Hostname": "*", "Backends": ["b"], "AllowModelManagement": True}
        assert admin.put("/v1.0/frontends", json=frontend).status_code == 201
        wait_ready(dp_url + "/readyz", dp, tmp_path / "dp.log")

        def serving() -> bool:
            answer = httpx.post(
                dp_url + "/api/generate", json={"model": "llama3.2", "prompt": "x", "stream": False}
            )
            return answer.status_code == 200

        _wait(serving)
        client = ollama.Client(host=dp_url)
        assert client.chat(model="llama3.2", messages=[{"role": "user", "content": "hi"}]).message.content
        assert client.list().models
        assert httpx.get(dp_url + "/v1/models").status_code == 200
        weights = tmp_path / "w.gguf"
        weights.write_bytes(b"GGUF" + bytes(range(256)) * 64)
        digest = client.create_blob(weights)
        assert digest == "sha256:" + hashlib.sha256(weights.read_bytes()).hexdigest()
        assert client.create("mine:1b", files={"w.gguf": digest}).status == "success"

        stop(sim)  # now everything fails: probes, inference, listings, authoring
        for call in (
            lambda: client.chat(model="llama3.2", messages=[{"role": "user", "content": "hi"}]),
            lambda: client.create_blob(weights),
        ):
            with pytest.raises((ollama.ResponseError, httpx.HTTPError)):
                call()
        client.list()
        _wait(lambda: not admin.get("/v1.0/backends/b/health").json().get("Healthy", True))
        time.sleep(1.0)  # a few failed probes more
    for log in ("cp.log", "dp.log"):
        text = (tmp_path / log).read_text(errors="replace")
        assert "DEBUG" in text  # the level really was DEBUG
        for field, secret in SECRETS.items():
            assert secret not in text, f"{field} secret in {log}"
