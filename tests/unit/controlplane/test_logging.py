"""The control plane's log setup keeps per-request client logs out of the way; warnings at start."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from controlplane.runtime import ControlPlane
from controlplane.server import configure_logging
from controlplane.settings import Settings
from tests.support.signing import SnapshotKeys


def test_httpx_request_lines_show_only_at_debug() -> None:
    httpx_log = logging.getLogger("httpx")
    before = httpx_log.level
    try:
        configure_logging("INFO")
        assert httpx_log.level == logging.WARNING  # probes would log a line per request otherwise
        configure_logging("DEBUG")
        assert httpx_log.level == logging.NOTSET
    finally:
        httpx_log.setLevel(before)


async def test_a_short_admin_token_is_warned_about_at_start_without_showing_it(
    caplog: pytest.LogCaptureFixture, snapshot_keys: SnapshotKeys
) -> None:
    short, long = "short-token-123", "a-long-enough-random-admin-token-0123456789"
    settings = Settings(
        database_url="postgresql+psycopg://u@127.0.0.1:1/db",
        admin_tokens=(short, long),
        snapshot_signing_key_file=snapshot_keys.private,
    )
    with caplog.at_level(logging.WARNING, logger="ollamaflow.controlplane"):
        plane = ControlPlane(settings)
    await plane.db.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"only {len(short)} characters" in warnings[0]
    assert short not in caplog.text and long not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ollamaflow.controlplane"):
        quiet = ControlPlane(dataclasses.replace(settings, admin_tokens=(long,)))
    await quiet.db.close()
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


async def test_a_control_plane_without_a_signing_key_says_its_snapshots_go_out_unsigned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = "a-long-enough-random-admin-token-0123456789"
    with caplog.at_level(logging.WARNING, logger="ollamaflow.controlplane"):
        plane = ControlPlane(
            Settings(database_url="postgresql+psycopg://u@127.0.0.1:1/db", admin_tokens=(token,))
        )
    await plane.db.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "published unsigned" in warnings[0]
