"""The control plane's log and metrics settings: defaults, the environment, bad values named."""

from __future__ import annotations

import pytest

from controlplane.settings import load_settings
from shared.errors import ConfigError

REQUIRED = {"OLLAMAFLOW_DATABASE_URL": "postgresql://u@db/of", "OLLAMAFLOW_ADMIN_TOKENS": "a"}


def test_defaults_text_logs_and_open_metrics_on_the_api_port() -> None:
    settings = load_settings(env=REQUIRED)
    assert (settings.log_format, settings.log_syslog) == ("text", "")
    assert (settings.metrics, settings.metrics_port, settings.metrics_token) == (True, 0, "")


def test_the_environment_sets_them_and_the_token_stays_out_of_repr() -> None:
    env = REQUIRED | {
        "OLLAMAFLOW_LOG_FORMAT": "json",
        "OLLAMAFLOW_LOG_SYSLOG": "/dev/log",
        "OLLAMAFLOW_METRICS": "false",
        "OLLAMAFLOW_CONTROLPLANE_METRICS_PORT": "9465",
        "OLLAMAFLOW_METRICS_TOKEN": "scrape-secret",
    }
    settings = load_settings(env=env)
    assert (settings.log_format, settings.log_syslog, settings.metrics) == ("json", "/dev/log", False)
    assert (settings.metrics_port, settings.metrics_token) == (9465, "scrape-secret")
    assert "scrape-secret" not in repr(settings)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("LOG_FORMAT", "xml"),
        ("LOG_SYSLOG", "nohost"),
        ("METRICS", "perhaps"),
        ("CONTROLPLANE_METRICS_PORT", "-1"),
    ],
)
def test_bad_values_name_the_variable(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"OLLAMAFLOW_{key}"):
        load_settings(env=REQUIRED | {f"OLLAMAFLOW_{key}": value})
