"""`ollamaflow dataplane` as a real process: options, config file, start-up without NATS, SIGTERM."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from shared.snapshot import BackendView, FrontendView, SnapshotContent
from tests.dataplane.harness import snapshot_bytes
from tests.support.processes import CLI, free_port, ollamaflow, stop, wait_ready
from tests.support.signing import SnapshotKeys

pytestmark = pytest.mark.slow


def test_help_names_the_options() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ollamaflow.cli", "dataplane", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for option in ("--host", "--port", "--config", "--id", "--workers", "OLLAMAFLOW_SNAPSHOT_CACHE"):
        assert option in done.stdout


def test_serves_from_the_cache_named_in_its_config_file_and_stops_cleanly_on_sigterm(
    tmp_path: Path, snapshot_keys: SnapshotKeys
) -> None:
    cache = tmp_path / "snapshot.json"
    content = SnapshotContent(
        frontends=(FrontendView(id="f", backends=("b",)),),
        backends=(BackendView(id="b", base_url="http://127.0.0.1:9"),),
    )
    cache.write_bytes(snapshot_bytes(content, 4))
    config = tmp_path / "dataplane.toml"
    config.write_text(
        f'snapshot_cache = "{cache}"\nnats_url = "nats://127.0.0.1:{free_port()}"\n'
        f'snapshot_public_key_files = ["{snapshot_keys.public}"]\n'
    )
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OLLAMAFLOW_")}
    args = [
        "dataplane",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--config",
        str(config),
        "--id",
        "cli-dp",
    ]
    log = tmp_path / "dp.log"
    with ollamaflow(args, log, env) as proc:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url + "/readyz", proc, log)
        assert httpx.get(url + "/readyz").json()["revision"] == 4
        assert httpx.get(url + "/healthz").json() == {"status": "ok", "id": "cli-dp"}
        assert stop(proc) == 0
    assert "Traceback" not in log.read_text()


def test_a_bad_setting_is_a_clear_error(tmp_path: Path) -> None:
    env = {**os.environ, "OLLAMAFLOW_REPORT_INTERVAL": "soon"}
    done = subprocess.run(
        [sys.executable, "-m", "ollamaflow.cli", "dataplane", "--port", str(free_port())],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert done.returncode != 0
    assert "report_interval" in done.stderr
    assert "Traceback" not in done.stderr


def test_workers_on_a_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [*CLI, "dataplane", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr
