"""The parent of ``ollamaflow dataplane --workers``, run in this process: a worker that cannot start is
started again with backoff until the crash-loop limit, then the parent gives up (exit code 1)."""

from __future__ import annotations

import socket
import time

import pytest

from dataplane.settings import load_settings
from ollamaflow.restarts import RestartPolicy
from ollamaflow.worker_parent import run_workers

pytestmark = pytest.mark.slow


def test_a_crash_looping_worker_ends_the_data_plane(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, nats_url: str
) -> None:
    monkeypatch.setenv("OLLAMAFLOW_ALLOW_UNSIGNED_SNAPSHOTS", "true")
    monkeypatch.setenv("OLLAMAFLOW_NATS_URL", nats_url)
    with socket.socket() as taken:  # worker 1's metrics port (P + 1) is taken: it cannot start
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        metrics_port = taken.getsockname()[1] - 1
        settings = load_settings(
            environ={},
            dataplane_host="127.0.0.1",
            dataplane_port=0,
            dataplane_id="loop",
            dataplane_metrics_port=metrics_port,
            allow_unsigned_snapshots=True,
            nats_url=nats_url,
            drain_timeout=1.0,
        )
        policy = RestartPolicy(first_delay=0.05, max_delay=0.1, max_restarts=2, window=60.0)
        started = time.monotonic()
        with caplog.at_level("INFO", logger="ollamaflow.dataplane"):
            assert run_workers(settings, 2, policy=policy) == 1
    assert time.monotonic() - started < 60
    text = caplog.text
    assert text.count("worker loop-w1 exited with code") == 3
    assert "starting it again in 0.05 s (restart 1)" in text
    assert "after 2 restarts within 60 s" in text
    assert "all workers stopped" in text
