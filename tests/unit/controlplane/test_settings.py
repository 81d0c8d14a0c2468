"""Settings: environment over the TOML file over defaults, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.settings import Settings, load_database_url, load_settings, sqlalchemy_url
from shared.errors import ConfigError

REQUIRED = {"OLLAMAFLOW_DATABASE_URL": "postgresql://u:pw@db:5432/of", "OLLAMAFLOW_ADMIN_TOKENS": "a, b ,,"}


def test_defaults_and_required_values() -> None:
    settings = load_settings(env=REQUIRED)
    assert settings.database_url == "postgresql+psycopg://u:pw@db:5432/of"
    assert settings.admin_tokens == ("a", "b")
    assert (settings.host, settings.port) == ("127.0.0.1", 43412)
    assert (settings.nats_url, settings.bus_namespace) == ("nats://127.0.0.1:4222", "ollamaflow")
    assert (settings.publish_interval, settings.dataplane_ttl, settings.log_level) == (30.0, 10.0, "INFO")


@pytest.mark.parametrize("missing", ["OLLAMAFLOW_DATABASE_URL", "OLLAMAFLOW_ADMIN_TOKENS"])
def test_missing_required_values_name_the_variable(missing: str) -> None:
    env = {k: v for k, v in REQUIRED.items() if k != missing}
    with pytest.raises(ConfigError, match=missing):
        load_settings(env=env)


def test_an_admin_token_list_of_blanks_is_no_token() -> None:
    with pytest.raises(ConfigError, match="ADMIN_TOKENS"):
        load_settings(env={**REQUIRED, "OLLAMAFLOW_ADMIN_TOKENS": " , ,"})


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgres://u@h:5/db?sslmode=require", "postgresql+psycopg://u@h:5/db?sslmode=require"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
    ],
)
def test_database_urls_are_converted(given: str, expected: str) -> None:
    assert sqlalchemy_url(given) == expected


@pytest.mark.parametrize(
    "bad", ["mysql://u@h/db", "postgresql+asyncpg://u@h/db", "postgresql://", "db.example"]
)
def test_other_database_urls_are_rejected(bad: str) -> None:
    with pytest.raises(ConfigError, match="PostgreSQL"):
        sqlalchemy_url(bad)


def test_file_environment_and_overrides_in_order(tmp_path: Path) -> None:
    config = tmp_path / "ollamaflow.toml"
    config.write_text(
        'database_url = "postgres://file@db/of"\n'
        'admin_tokens = ["t1", "t2"]\n'
        "controlplane_port = 5000\n"
        'controlplane_host = "0.0.0.0"\n'
        "publish_interval = 2.5\n"
        'dataplane_host = "ignored: the data plane\'s key"\n'
    )
    from_file = load_settings(config, env={})
    assert from_file.database_url == "postgresql+psycopg://file@db/of"
    assert (from_file.admin_tokens, from_file.port, from_file.host) == (("t1", "t2"), 5000, "0.0.0.0")
    assert from_file.publish_interval == 2.5

    env = {"OLLAMAFLOW_CONTROLPLANE_PORT": "6000", "OLLAMAFLOW_CONFIG": str(config)}
    assert load_settings(env=env).port == 6000  # the environment wins over the file
    assert (
        load_settings(env=env, overrides={"port": 7000, "host": None}).port == 7000
    )  # the CLI wins over both
    assert load_settings(env=env, overrides={"host": None}).host == "0.0.0.0"


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("OLLAMAFLOW_CONTROLPLANE_PORT", "70000", "OLLAMAFLOW_CONTROLPLANE_PORT"),
        ("OLLAMAFLOW_CONTROLPLANE_PORT", "http", "OLLAMAFLOW_CONTROLPLANE_PORT"),
        ("OLLAMAFLOW_PUBLISH_INTERVAL", "0", "OLLAMAFLOW_PUBLISH_INTERVAL"),
        ("OLLAMAFLOW_DATAPLANE_TTL", "soon", "OLLAMAFLOW_DATAPLANE_TTL"),
        ("OLLAMAFLOW_LOG_LEVEL", "LOUD", "OLLAMAFLOW_LOG_LEVEL"),
    ],
)
def test_malformed_values_name_the_variable(key: str, value: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings(env={**REQUIRED, key: value})


def test_unreadable_config_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.toml", env=REQUIRED)
    broken = tmp_path / "broken.toml"
    broken.write_text("database_url = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(broken, env=REQUIRED)


def test_database_url_alone_for_migrate() -> None:
    assert load_database_url(env={}, database_url="postgres://x@h/d") == "postgresql+psycopg://x@h/d"
    with pytest.raises(ConfigError, match="OLLAMAFLOW_DATABASE_URL"):
        load_database_url(env={})


def test_repr_hides_secrets() -> None:
    text = repr(load_settings(env={**REQUIRED, "OLLAMAFLOW_ADMIN_TOKENS": "very-secret"}))
    assert "very-secret" not in text and "pw" not in text
    assert isinstance(load_settings(env=REQUIRED), Settings)


def test_backend_monitoring_settings() -> None:
    settings = load_settings(env=REQUIRED)
    assert settings.monitor_backends and not settings.sync_remove_unrequired
    assert (settings.health_interval, settings.health_timeout, settings.inventory_interval) == (
        5.0,
        2.0,
        15.0,
    )
    assert (settings.sync_parallelism, settings.sync_parallelism_per_backend) == (4, 2)
    assert settings.ejected_probe_gap == 1.0
    env = {
        **REQUIRED,
        "OLLAMAFLOW_HEALTH_INTERVAL": "0.5",
        "OLLAMAFLOW_HEALTH_TIMEOUT": "0.25",
        "OLLAMAFLOW_EJECTED_PROBE_GAP": "2.5",
        "OLLAMAFLOW_SYNC_PARALLELISM": "8",
        "OLLAMAFLOW_SYNC_PARALLELISM_PER_BACKEND": "1",
        "OLLAMAFLOW_SYNC_REMOVE_UNREQUIRED": "yes",
        "OLLAMAFLOW_MONITOR_BACKENDS": "false",
    }
    settings = load_settings(env=env)
    assert (settings.health_interval, settings.health_timeout, settings.ejected_probe_gap) == (0.5, 0.25, 2.5)
    assert (settings.sync_parallelism, settings.sync_parallelism_per_backend) == (8, 1)
    assert settings.sync_remove_unrequired and not settings.monitor_backends


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("OLLAMAFLOW_SYNC_REMOVE_UNREQUIRED", "maybe"),
        ("OLLAMAFLOW_SYNC_PARALLELISM", "0"),
        ("OLLAMAFLOW_SYNC_PARALLELISM_PER_BACKEND", "1.5"),
        ("OLLAMAFLOW_HEALTH_INTERVAL", "0"),
        ("OLLAMAFLOW_EJECTED_PROBE_GAP", "soon"),
    ],
)
def test_bad_monitoring_settings_name_the_variable(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=key):
        load_settings(env={**REQUIRED, key: value})


def test_backend_tls_settings(tmp_path: Path) -> None:
    settings = load_settings(env=REQUIRED)
    assert (settings.backend_ca_file, settings.backend_tls_verify) == (None, True)
    env = {
        **REQUIRED,
        "OLLAMAFLOW_BACKEND_CA_FILE": str(tmp_path / "ca.pem"),
        "OLLAMAFLOW_BACKEND_TLS_VERIFY": "0",
    }
    settings = load_settings(env=env)
    assert (settings.backend_ca_file, settings.backend_tls_verify) == (tmp_path / "ca.pem", False)
    with pytest.raises(ConfigError, match="OLLAMAFLOW_BACKEND_TLS_VERIFY"):
        load_settings(env={**REQUIRED, "OLLAMAFLOW_BACKEND_TLS_VERIFY": "perhaps"})


def test_the_secrets_key_from_the_environment_or_a_file(tmp_path: Path) -> None:
    key, old = "a" * 64, "b" * 64
    assert not load_settings(env=REQUIRED).secrets  # none: the admin API then refuses backend secrets
    settings = load_settings(
        env={**REQUIRED, "OLLAMAFLOW_SECRETS_KEY": key, "OLLAMAFLOW_SECRETS_PREVIOUS_KEYS": old}
    )
    assert len(settings.secrets.ids()) == 2
    assert key not in repr(settings) and settings.secrets.ids()[0] in repr(settings)
    key_file = tmp_path / "secrets-key"
    key_file.write_text(key + "\n")
    from_file = load_settings(env={**REQUIRED, "OLLAMAFLOW_SECRETS_KEY_FILE": str(key_file)})
    assert from_file.secrets.ids() == settings.secrets.ids()[:1]
    with pytest.raises(ConfigError, match="OLLAMAFLOW_SECRETS_KEY"):
        load_settings(env={**REQUIRED, "OLLAMAFLOW_SECRETS_KEY": "too-short"})


def test_replica_and_lease_settings(tmp_path: Path) -> None:
    defaults = load_settings(env=REQUIRED)
    assert (defaults.replica_id, defaults.advertise_url) == ("", "")
    assert (defaults.lease_ttl, defaults.lease_renew) == (3.0, 1.0)
    settings = load_settings(
        env={
            **REQUIRED,
            "OLLAMAFLOW_CONTROLPLANE_ID": "cp-2",
            "OLLAMAFLOW_CONTROLPLANE_URL": "http://cp-2:43412",
            "OLLAMAFLOW_LEASE_TTL": "10",
            "OLLAMAFLOW_LEASE_RENEW": "2.5",
        }
    )
    assert (settings.replica_id, settings.advertise_url) == ("cp-2", "http://cp-2:43412")
    assert (settings.lease_ttl, settings.lease_renew) == (10.0, 2.5)
    config = tmp_path / "cp.toml"
    config.write_text('controlplane_id = "from-file"\nlease_ttl = 6\n')
    assert load_settings(config, env=REQUIRED).replica_id == "from-file"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"OLLAMAFLOW_LEASE_TTL": "0"}, "OLLAMAFLOW_LEASE_TTL"),
        ({"OLLAMAFLOW_LEASE_RENEW": "soon"}, "OLLAMAFLOW_LEASE_RENEW"),
        # The holder must get two tries to renew before its lease runs out.
        ({"OLLAMAFLOW_LEASE_TTL": "3", "OLLAMAFLOW_LEASE_RENEW": "2"}, "at most half"),
        ({"OLLAMAFLOW_LEASE_TTL": "1"}, "at most half"),
    ],
)
def test_bad_lease_settings_are_refused(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings(env={**REQUIRED, **env})
