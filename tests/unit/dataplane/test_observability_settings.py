"""The data plane's log and metrics settings: defaults, the environment, and bad values named."""

from __future__ import annotations

import pytest

from dataplane.settings import load_settings
from shared.errors import ConfigError


def test_defaults_log_text_with_an_access_log_and_metrics_on_the_main_port() -> None:
    settings = load_settings(environ={})
    assert (settings.log_format, settings.log_syslog, settings.access_log) == ("text", "", True)
    assert (settings.metrics, settings.dataplane_metrics_port, settings.metrics_token) == (True, 0, "")
    assert settings.metrics_max_models == 100
    assert settings.otel_endpoint == ""  # no traces


def test_the_environment_sets_them() -> None:
    env = {
        "OLLAMAFLOW_LOG_FORMAT": "JSON",
        "OLLAMAFLOW_LOG_SYSLOG": "logs.internal:514",
        "OLLAMAFLOW_ACCESS_LOG": "false",
        "OLLAMAFLOW_METRICS": "off",
        "OLLAMAFLOW_DATAPLANE_METRICS_PORT": "9464",
        "OLLAMAFLOW_METRICS_TOKEN": "scrape-token",
        "OLLAMAFLOW_METRICS_MAX_MODELS": "20",
        "OLLAMAFLOW_OTEL_ENDPOINT": "http://collector:4318/v1/traces",
    }
    settings = load_settings(environ=env)
    assert (settings.log_format, settings.log_syslog, settings.access_log) == (
        "json",
        "logs.internal:514",
        False,
    )
    assert (settings.metrics, settings.dataplane_metrics_port, settings.metrics_max_models) == (
        False,
        9464,
        20,
    )
    assert settings.metrics_token == "scrape-token" and "scrape-token" not in repr(settings)
    assert settings.otel_endpoint == "http://collector:4318/v1/traces"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("LOG_FORMAT", "xml"),
        ("LOG_SYSLOG", "nohost"),
        ("ACCESS_LOG", "maybe"),
        ("DATAPLANE_METRICS_PORT", "70000"),
        ("METRICS_MAX_MODELS", "0"),
    ],
)
def test_bad_values_name_the_key(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=key.lower()):
        load_settings(environ={f"OLLAMAFLOW_{key}": value})
