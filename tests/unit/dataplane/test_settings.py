"""Settings: defaults, file, environment and CLI options, in that order of precedence."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from dataplane.app import DataPlane
from dataplane.settings import load_settings
from dataplane.upstream.builtin import Upstream
from shared.errors import ConfigError

# Settings for data planes built only to inspect them (they never see a snapshot).
UNSIGNED = {"OLLAMAFLOW_ALLOW_UNSIGNED_SNAPSHOTS": "true"}


def test_defaults_and_generated_id() -> None:
    settings = load_settings(environ={})
    assert (settings.dataplane_host, settings.dataplane_port) == ("0.0.0.0", 43411)
    assert settings.nats_url == "nats://127.0.0.1:4222"
    assert settings.snapshot_cache is None
    assert settings.dataplane_id.split("-")[-2] == "43411"
    assert load_settings(environ={}).dataplane_id != settings.dataplane_id


def test_file_then_environment_then_options(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        'nats_url = "nats://file:1"\ndataplane_port = 1000\nreport_interval = 0.5\nbus_namespace = "f"\n'
    )
    env = {
        "OLLAMAFLOW_CONFIG": str(config),
        "OLLAMAFLOW_DATAPLANE_PORT": "2000",
        "OLLAMAFLOW_BUS_NAMESPACE": "e",
        "OLLAMAFLOW_SNAPSHOT_CACHE": str(tmp_path / "snap.json"),
    }
    settings = load_settings(environ=env, dataplane_port=3000, dataplane_id=None)
    assert settings.nats_url == "nats://file:1"
    assert settings.report_interval == 0.5
    assert settings.bus_namespace == "e"
    assert settings.dataplane_port == 3000
    assert settings.snapshot_cache == tmp_path / "snap.json"


@pytest.mark.parametrize(("key", "value"), [("DATAPLANE_PORT", "http"), ("REPORT_INTERVAL", "0")])
def test_bad_values_name_the_key(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=key.lower()):
        load_settings(environ={f"OLLAMAFLOW_{key}": value})


def test_unreadable_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(config_file=tmp_path / "missing.toml", environ={})
    bad = tmp_path / "bad.toml"
    bad.write_text("= nope")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(config_file=bad, environ={})


def test_passive_health_settings_come_from_the_environment() -> None:
    env = {"OLLAMAFLOW_EJECT_AFTER_ERRORS": "5", "OLLAMAFLOW_EJECT_COOLDOWN": "2.5"}
    settings = load_settings(environ=env)
    assert (settings.eject_after_errors, settings.eject_cooldown) == (5, 2.5)
    with pytest.raises(ConfigError, match="eject_cooldown"):
        load_settings(environ={"OLLAMAFLOW_EJECT_COOLDOWN": "0"})


def test_the_drain_timeout_comes_from_the_environment() -> None:
    assert load_settings(environ={}).drain_timeout == 30.0
    assert load_settings(environ={"OLLAMAFLOW_DRAIN_TIMEOUT": "2.5"}).drain_timeout == 2.5
    assert load_settings(environ={"OLLAMAFLOW_DRAIN_TIMEOUT": "0"}).drain_timeout == 0.0  # end at once
    for bad in ("-1", "nan", "inf", "soon"):
        with pytest.raises(ConfigError, match="drain_timeout"):
            load_settings(environ={"OLLAMAFLOW_DRAIN_TIMEOUT": bad})


def test_client_limits_come_from_the_environment() -> None:
    defaults = load_settings(environ={})
    assert (defaults.client_max_header_bytes, defaults.client_max_headers) == (65536, 100)
    assert (defaults.client_header_timeout, defaults.client_body_timeout) == (10.0, 30.0)
    assert (defaults.client_keep_alive_timeout, defaults.client_send_timeout) == (30.0, 60.0)
    assert (defaults.client_max_connections, defaults.max_json_body) == (10000, 32 * 1024 * 1024)
    env = {
        "OLLAMAFLOW_CLIENT_MAX_HEADER_BYTES": "8192",
        "OLLAMAFLOW_CLIENT_HEADER_TIMEOUT": "2.5",
        "OLLAMAFLOW_CLIENT_MAX_CONNECTIONS": "50",
        "OLLAMAFLOW_MAX_JSON_BODY": "1048576",
    }
    settings = load_settings(environ=env)
    assert (settings.client_max_header_bytes, settings.client_header_timeout) == (8192, 2.5)
    assert (settings.client_max_connections, settings.max_json_body) == (50, 1048576)
    with pytest.raises(ConfigError, match="client_send_timeout"):
        load_settings(environ={"OLLAMAFLOW_CLIENT_SEND_TIMEOUT": "0"})


def test_upstream_client_and_tls_settings(tmp_path: Path) -> None:
    settings = load_settings(environ={})
    assert settings.upstream_client == "builtin"
    assert settings.max_translated_body == 64 * 1024 * 1024
    assert (settings.backend_ca_file, settings.backend_tls_verify) == (None, True)
    env = {
        "OLLAMAFLOW_UPSTREAM_CLIENT": "aiohttp",
        "OLLAMAFLOW_MAX_TRANSLATED_BODY": "1048576",
        "OLLAMAFLOW_BACKEND_CA_FILE": str(tmp_path / "ca.pem"),
        "OLLAMAFLOW_BACKEND_TLS_VERIFY": "false",
    }
    settings = load_settings(environ=env)
    assert settings.upstream_client == "aiohttp"
    assert settings.max_translated_body == 1048576
    assert (settings.backend_ca_file, settings.backend_tls_verify) == (tmp_path / "ca.pem", False)
    bad = [("UPSTREAM_CLIENT", "httpx"), ("MAX_TRANSLATED_BODY", "0"), ("BACKEND_TLS_VERIFY", "?")]
    for key, value in bad:
        with pytest.raises(ConfigError, match=key.lower()):
            load_settings(environ={f"OLLAMAFLOW_{key}": value})


def test_the_aiohttp_client_is_imported_only_when_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    """The data plane runs without aiohttp installed unless it is asked for, then says what is missing."""
    monkeypatch.setitem(sys.modules, "aiohttp", None)  # as if it were not installed
    monkeypatch.delitem(sys.modules, "dataplane.upstream.aiohttp_client", raising=False)
    assert isinstance(DataPlane(load_settings(environ=UNSIGNED)).upstream, Upstream)
    with pytest.raises(ConfigError, match=r"OLLAMAFLOW_UPSTREAM_CLIENT=aiohttp needs the aiohttp package"):
        DataPlane(load_settings(environ={**UNSIGNED, "OLLAMAFLOW_UPSTREAM_CLIENT": "aiohttp"}))


def test_an_unreadable_ca_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="OLLAMAFLOW_BACKEND_CA_FILE"):
        DataPlane(
            load_settings(environ={**UNSIGNED, "OLLAMAFLOW_BACKEND_CA_FILE": str(tmp_path / "none.pem")})
        )
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ConfigError, match="OLLAMAFLOW_BACKEND_CA_FILE"):
        DataPlane(load_settings(environ={**UNSIGNED, "OLLAMAFLOW_BACKEND_CA_FILE": str(bad)}))


def test_the_secrets_key_from_file_environment_or_key_file(tmp_path: Path) -> None:
    key, old = "c" * 64, "d" * 64
    assert not load_settings(environ={}).secrets
    config = tmp_path / "c.toml"
    config.write_text(f'secrets_key = "{key}"\n')
    from_config = load_settings(environ={"OLLAMAFLOW_CONFIG": str(config)})
    key_file = tmp_path / "secrets-key"
    key_file.write_text(key)
    env = {"OLLAMAFLOW_SECRETS_KEY_FILE": str(key_file), "OLLAMAFLOW_SECRETS_PREVIOUS_KEYS": old}
    from_env = load_settings(environ=env)
    assert from_config.secrets.ids() == from_env.secrets.ids()[:1] and len(from_env.secrets.ids()) == 2
    assert key not in repr(from_env)
    with pytest.raises(ConfigError, match="OLLAMAFLOW_SECRETS_KEY_FILE"):
        load_settings(environ={"OLLAMAFLOW_SECRETS_KEY_FILE": str(tmp_path / "none")})


def test_bus_login_and_snapshot_keys_come_from_the_environment_or_the_file(tmp_path: Path) -> None:
    env = {
        "OLLAMAFLOW_NATS_USER": "dataplane",
        "OLLAMAFLOW_NATS_PASSWORD": "s3cret",
        "OLLAMAFLOW_NATS_CA_FILE": "/etc/ca.pem",
        "OLLAMAFLOW_SNAPSHOT_PUBLIC_KEY_FILES": "/k/old.pem, /k/new.pem",
    }
    settings = load_settings(environ=env)
    assert (settings.nats_user, settings.nats_password) == ("dataplane", "s3cret")
    assert settings.nats_ca_file == Path("/etc/ca.pem")
    assert settings.snapshot_public_key_files == (Path("/k/old.pem"), Path("/k/new.pem"))
    assert not settings.allow_unsigned_snapshots
    assert "s3cret" not in repr(settings)
    config = tmp_path / "dp.toml"
    config.write_text('snapshot_public_key_files = ["/a.pem", "/b.pem"]\nallow_unsigned_snapshots = true\n')
    from_file = load_settings(config_file=config, environ={})
    assert from_file.snapshot_public_key_files == (Path("/a.pem"), Path("/b.pem"))
    assert from_file.allow_unsigned_snapshots


def test_a_data_plane_without_a_public_key_refuses_to_start_unless_unsigned_is_allowed() -> None:
    with pytest.raises(ConfigError, match="OLLAMAFLOW_SNAPSHOT_PUBLIC_KEY_FILES is required"):
        DataPlane(load_settings(environ={}))
    assert DataPlane(load_settings(environ=UNSIGNED)).state.trust.allow_unsigned
