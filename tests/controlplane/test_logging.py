"""The control plane's log setup keeps per-request client logs out of the way."""

from __future__ import annotations

import logging

from controlplane.server import configure_logging


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
