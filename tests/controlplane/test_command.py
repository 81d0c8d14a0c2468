"""``ollamaflow controlplane`` as a real process: configuration errors, serving, and SIGTERM."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from controlplane.settings import Settings
from tests.support.processes import free_port, ollamaflow, stop, wait_ready

CLI = [sys.executable, "-m", "ollamaflow.cli", "controlplane"]


def _env_without_ollamaflow() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("OLLAMAFLOW_")}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({}, "OLLAMAFLOW_DATABASE_URL is required"),
        ({"OLLAMAFLOW_DATABASE_URL": "postgresql://u@h/d"}, "OLLAMAFLOW_ADMIN_TOKENS is required"),
        (
            {"OLLAMAFLOW_DATABASE_URL": "mysql://u@h/d", "OLLAMAFLOW_ADMIN_TOKENS": "t"},
            "must be a PostgreSQL URL",
        ),
    ],
)
def test_configuration_errors_exit_2_with_one_line(extra: dict[str, str], message: str) -> None:
    done = subprocess.run(
        CLI,
        env={**_env_without_ollamaflow(), **extra},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ollamaflow controlplane: ") and message in lines[0]


@pytest.mark.slow
def test_serves_and_stops_cleanly_on_sigterm(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    env = {
        "OLLAMAFLOW_DATABASE_URL": settings.database_url,
        "OLLAMAFLOW_ADMIN_TOKENS": ",".join(settings.admin_tokens),
        "OLLAMAFLOW_NATS_URL": settings.nats_url,
        "OLLAMAFLOW_BUS_NAMESPACE": settings.bus_namespace,
    }
    log = tmp_path / "controlplane.log"
    with ollamaflow(["controlplane", "--port", str(port)], log, env) as proc:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url + "/readyz", proc, log, timeout=60)
        headers = {"Authorization": f"Bearer {settings.admin_tokens[0]}"}
        assert (
            httpx.put(url + "/v1.0/backends", json={"Identifier": "b1"}, headers=headers).status_code == 201
        )
        assert stop(proc) == 0
    text = log.read_text()
    assert "Application shutdown complete" in text
    assert "Traceback" not in text
