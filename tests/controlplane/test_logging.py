"""The control plane's log setup keeps per-request client logs out of the way; warnings at start."""

from __future__ import annotations

import logging

import pytest

from controlplane.runtime import ControlPlane
from controlplane.server import configure_logging
from controlplane.settings import Settings


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
    caplog: pytest.LogCaptureFixture,
) -> None:
    short, long = "short-token-123", "a-long-enough-random-admin-token-0123456789"
    settings = Settings(database_url="postgresql+psycopg://u@127.0.0.1:1/db", admin_tokens=(short, long))
    with caplog.at_level(logging.WARNING, logger="ollamaflow.controlplane"):
        plane = ControlPlane(settings)
    await plane.db.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"only {len(short)} characters" in warnings[0]
    assert short not in caplog.text and long not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ollamaflow.controlplane"):
        quiet = ControlPlane(Settings(database_url=settings.database_url, admin_tokens=(long,)))
    await quiet.db.close()
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
