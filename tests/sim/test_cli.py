"""``ollamaflow sim`` as a process: starts on a free port, answers, stops cleanly on SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(repo_root: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "ollamaflow.cli", "sim", *args],
        cwd=repo_root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else b""
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise TimeoutError(url)


def test_cli_serves_and_stops_on_sigterm(repo_root: Path) -> None:
    port = _free_port()
    process = _start(
        repo_root, "--port", str(port), "--format", "openai", "--models", "m1,all-minilm", "--latency-ms", "1"
    )
    try:
        _wait_ready(f"http://127.0.0.1:{port}/v1/models", process)
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models").json()
        assert [m["id"] for m in models["data"]] == ["m1", "all-minilm"]
        assert httpx.get(f"http://127.0.0.1:{port}/api/tags").status_code == 404

        # A second simulator on the same port fails instead of sharing it.
        second = _start(repo_root, "--port", str(port))
        assert second.wait(timeout=20) == 1
        assert b"cannot listen" in (second.stderr.read() if second.stderr else b"")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0


def test_cli_rejects_bad_options(repo_root: Path) -> None:
    bad = subprocess.run(
        [sys.executable, "-m", "ollamaflow.cli", "sim", "--port", "1", "--fail-rate", "2"],
        cwd=repo_root,
        capture_output=True,
        timeout=30,
    )
    assert bad.returncode == 2 and b"--fail-rate" in bad.stderr
    bad_format = subprocess.run(
        [sys.executable, "-m", "ollamaflow.cli", "sim", "--port", "1", "--format", "grpc"],
        cwd=repo_root,
        capture_output=True,
        timeout=30,
    )
    assert bad_format.returncode == 2 and b"--format" in bad_format.stderr
