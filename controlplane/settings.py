"""Control-plane settings: environment variables over an optional TOML file over defaults.

Every key is ``OLLAMAFLOW_<KEY>`` in the environment and ``<key>`` (lower case) in the TOML file named
by ``OLLAMAFLOW_CONFIG`` or ``--config``. The file may hold the data plane's keys too; they are ignored
here. Command-line options (``overrides``) win over both.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.cors import parse_origins
from shared.errors import ConfigError
from shared.logformat import LOG_FORMATS, syslog_address
from shared.secret_box import Keyring, load_keyring

__all__ = ["Settings", "env_name", "load_database_url", "load_settings", "sqlalchemy_url"]

ENV_PREFIX = "OLLAMAFLOW_"
_PG_PREFIXES = ("postgresql+psycopg://", "postgresql://", "postgres://")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_LEASE_TTL = 3.0
_LEASE_RENEW = 1.0


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the control plane reads at start-up."""

    database_url: str
    """SQLAlchemy URL of the configuration database, always ``postgresql+psycopg://…``."""
    admin_tokens: tuple[str, ...]
    """Bearer tokens accepted by the admin API (``/v1.0``). No default token ever ships."""
    nats_url: str = "nats://127.0.0.1:4222"
    bus_namespace: str = "ollamaflow"
    log_level: str = "INFO"
    host: str = "127.0.0.1"
    port: int = 43412
    publish_interval: float = 30.0
    """Seconds between periodic re-publishes (skipped when the content is unchanged)."""
    dataplane_ttl: float = 10.0
    """Seconds after which a data plane that sent no report counts as gone."""
    monitor_backends: bool = True
    """Probe backends, read their models and sync RequiredModels. False: the control plane sends
    nothing to backends and publishes every backend as healthy (OllamaFlow without health checks)."""
    health_interval: float = 5.0
    """Seconds between two health probes of one backend."""
    health_timeout: float = 2.0
    """Seconds a health probe may take before it counts as failed."""
    ejected_probe_gap: float = 1.0
    """When data planes report a backend ejected it is probed at once, but at most once per this many
    seconds; until the probes confirm the failure, they repeat at this pace instead of the interval."""
    inventory_interval: float = 15.0
    """Seconds between two reads of a backend's model lists (/api/tags and /api/ps, or /v1/models)."""
    sync_parallelism: int = 4
    """Model pulls running at once in the whole cluster."""
    sync_parallelism_per_backend: int = 2
    """Model pulls running at once on one backend."""
    sync_max_attempts: int = 5
    """Attempts per pull before it stays failed (until the model or the backend changes)."""
    sync_retry_delay: float = 2.0
    """Seconds before the first retry of a failed pull; doubled for each further one (at most 5 min)."""
    sync_remove_unrequired: bool = False
    """Delete models that no frontend requires from Ollama backends that have RequiredModels."""
    backend_ca_file: Path | None = None
    """A PEM bundle of CAs trusted besides the system's for https backends (``shared.tls``)."""
    backend_tls_verify: bool = True
    """Verify https backends' certificates and host names (false: for tests and trusted networks)."""
    replica_id: str = ""
    """This replica's name in the control-plane lease (empty: ``<host name>-<port>``). Unique per
    replica; a replica that finds its own id in the lease takes it back at once after a restart."""
    advertise_url: str = ""
    """This replica's admin URL as other replicas and people should use it (shown with the lease;
    empty: ``http://<host, or the host name for a wildcard address>:<port>``)."""
    lease_ttl: float = _LEASE_TTL
    """Seconds a control-plane lease that is not renewed lasts before another replica takes over."""
    lease_renew: float = _LEASE_RENEW
    """Seconds between two renewals of the lease by its holder (at most half of ``lease_ttl``)."""
    max_frontends: int = 5_000
    """Frontends the admin API lets the cluster hold (the snapshot carries them all)."""
    max_backends: int = 20_000
    """Backends the admin API lets the cluster hold."""
    max_apikeys: int = 50_000
    """Client API keys the admin API lets the cluster hold."""
    log_format: str = "text"
    """Log lines on stderr: ``text`` or ``json`` (one object per line, ``shared.logformat``)."""
    log_syslog: str = ""
    """Also send the logs to syslog: ``host:port`` (UDP) or a Unix socket path such as ``/dev/log``."""
    metrics: bool = True
    """Serve Prometheus metrics (``controlplane.metrics``)."""
    metrics_port: int = 0
    """0: ``/metrics`` on the control plane's port; another port: there only."""
    metrics_token: str = ""
    """A bearer token ``/metrics`` requires; empty: open like ``/healthz``."""
    secrets: Keyring = dataclasses.field(default_factory=Keyring)
    """The fleet's secrets key, which seals backend secrets in the snapshot (``shared.secret_box``), and
    previous keys (a rotation). Without one, the admin API refuses backend secrets."""
    nats_user: str = ""
    """This plane's NATS user (``shared.bus_connect``); empty: none, or the one in the URL."""
    nats_password: str = ""
    nats_ca_file: Path | None = None
    """A PEM bundle of CAs to verify the NATS server with; setting it (or a tls:// URL) turns TLS on."""
    nats_cert_file: Path | None = None
    """A client certificate for NATS servers that verify clients (with ``nats_key_file``)."""
    nats_key_file: Path | None = None
    snapshot_signing_key_file: Path | None = None
    """The ed25519 private key (PEM) that signs every published snapshot (``shared.signing``).
    None: snapshots go out unsigned, which data planes refuse unless they allow unsigned ones."""
    cors_origins: tuple[str, ...] = ()
    """Browser origins whose pages may call the admin API (``shared.cors``: ``http://localhost:3000``,
    or ``*``); empty: no CORS headers, so browsers let no other origin read an answer."""

    def __repr__(self) -> str:
        # Keep credentials out of logs and tracebacks.
        return (
            f"Settings(database_url={_redact_url(self.database_url)!r}, "
            f"admin_tokens=<{len(self.admin_tokens)} tokens>, "
            f"nats_url={_redact_url(self.nats_url)!r}, nats_user={self.nats_user!r}, "
            f"bus_namespace={self.bus_namespace!r}, host={self.host!r}, "
            f"port={self.port}, publish_interval={self.publish_interval}, "
            f"dataplane_ttl={self.dataplane_ttl}, "
            f"monitor_backends={self.monitor_backends}, health_interval={self.health_interval}, "
            f"health_timeout={self.health_timeout}, inventory_interval={self.inventory_interval}, "
            f"sync_parallelism={self.sync_parallelism}/{self.sync_parallelism_per_backend}, "
            f"sync_remove_unrequired={self.sync_remove_unrequired}, replica_id={self.replica_id!r}, "
            f"lease_ttl={self.lease_ttl}, lease_renew={self.lease_renew}, secrets_keys={self.secrets.ids()})"
        )


def sqlalchemy_url(url: str) -> str:
    """Turn ``postgres://`` and ``postgresql://`` URLs into the ``postgresql+psycopg://`` SQLAlchemy needs."""
    url = url.strip()
    for prefix in _PG_PREFIXES:
        if url.startswith(prefix):
            rest = url[len(prefix) :]
            if not rest:
                break
            return "postgresql+psycopg://" + rest
    raise ConfigError(
        "OLLAMAFLOW_DATABASE_URL must be a PostgreSQL URL (postgresql://user@host:port/dbname), "
        f"got {_redact_url(url)!r}"
    )


def load_settings(
    config_file: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the settings; raise ConfigError naming the key for anything missing or malformed.

    ``overrides`` are keyed by Settings field name (``host``, ``port``…); None values are ignored.
    """
    merged = _merge(config_file, env, overrides)
    for required in ("database_url", "admin_tokens"):
        if not merged.get(required):
            raise ConfigError(f"{_env_name(required)} is required (or `{required}` in the config file)")
    tokens = _tokens(merged["admin_tokens"])
    if not tokens:
        raise ConfigError(f"{_env_name('admin_tokens')} holds no token")
    values: dict[str, Any] = {}
    for field in ("nats_url", "bus_namespace", "host", "replica_id", "advertise_url"):
        if field in merged:
            values[field] = _text(merged, field)
    if "log_level" in merged:
        values["log_level"] = _text(merged, "log_level").upper()
        if values["log_level"] not in _LOG_LEVELS:
            raise ConfigError(f"{_env_name('log_level')} must be one of {', '.join(_LOG_LEVELS)}")
    if "port" in merged:
        values["port"] = int(_number(merged, "port", low=0, high=65535, integer=True))
    for field in (
        "publish_interval",
        "dataplane_ttl",
        "health_interval",
        "health_timeout",
        "ejected_probe_gap",
        "inventory_interval",
        "sync_retry_delay",
        "lease_ttl",
        "lease_renew",
    ):
        if field in merged:
            values[field] = _number(merged, field, low=0.01)
    ttl, renew = values.get("lease_ttl", _LEASE_TTL), values.get("lease_renew", _LEASE_RENEW)
    if renew * 2 > ttl:
        raise ConfigError(
            f"{_env_name('lease_renew')} ({renew:g}) must be at most half of {_env_name('lease_ttl')} "
            f"({ttl:g}): a leader must get two tries to renew before its lease runs out"
        )
    for field in ("sync_parallelism", "sync_parallelism_per_backend", "sync_max_attempts"):
        if field in merged:
            values[field] = int(_number(merged, field, low=1, high=1000, integer=True))
    for field in ("max_frontends", "max_backends", "max_apikeys"):
        if field in merged:
            values[field] = int(_number(merged, field, low=1, high=10_000_000, integer=True))
    for field in ("monitor_backends", "sync_remove_unrequired", "backend_tls_verify"):
        if field in merged:
            values[field] = _flag(merged, field)
    if "log_format" in merged:
        values["log_format"] = _text(merged, "log_format").lower()
        if values["log_format"] not in LOG_FORMATS:
            raise ConfigError(f"{_env_name('log_format')} must be one of {', '.join(LOG_FORMATS)}")
    if "log_syslog" in merged:
        values["log_syslog"] = _text(merged, "log_syslog")
        try:
            syslog_address(values["log_syslog"])
        except ValueError as exc:
            raise ConfigError(f"{_env_name('log_syslog')}: {exc}") from None
    if "metrics" in merged:
        values["metrics"] = _flag(merged, "metrics")
    if "cors_origins" in merged:
        raw = merged["cors_origins"]
        try:
            values["cors_origins"] = parse_origins(",".join(raw) if isinstance(raw, list) else str(raw))
        except ValueError as exc:
            raise ConfigError(f"{_env_name('cors_origins')}: {exc}") from None
    if "metrics_port" in merged:
        values["metrics_port"] = int(_number(merged, "metrics_port", low=0, high=65535, integer=True))
    if "metrics_token" in merged:
        values["metrics_token"] = _text(merged, "metrics_token")
    files = ("backend_ca_file", "nats_ca_file", "nats_cert_file", "nats_key_file")
    files += ("snapshot_signing_key_file",)
    for field in files:
        if field in merged:
            values[field] = Path(_text(merged, field)).expanduser()
    for field in ("nats_user", "nats_password"):
        if field in merged:
            values[field] = _text(merged, field)
    values["secrets"] = load_keyring(
        _text(merged, "secrets_key") if "secrets_key" in merged else "",
        Path(_text(merged, "secrets_key_file")).expanduser() if "secrets_key_file" in merged else None,
        _text(merged, "secrets_previous_keys") if "secrets_previous_keys" in merged else "",
    )
    return Settings(database_url=sqlalchemy_url(_text(merged, "database_url")), admin_tokens=tokens, **values)


def load_database_url(
    config_file: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    database_url: str | None = None,
) -> str:
    """Only the database URL (for ``ollamaflow migrate``, which needs no admin token)."""
    merged = _merge(config_file, env, {"database_url": database_url})
    if not merged.get("database_url"):
        raise ConfigError(f"{_env_name('database_url')} is required (or --database-url)")
    return sqlalchemy_url(_text(merged, "database_url"))


def _merge(
    config_file: str | Path | None, env: Mapping[str, str] | None, overrides: Mapping[str, Any] | None
) -> dict[str, Any]:
    env = os.environ if env is None else env
    config_file = config_file or env.get(ENV_PREFIX + "CONFIG") or None
    merged: dict[str, Any] = _read_file(Path(config_file)) if config_file else {}
    for field, key in _KEYS.items():
        value = env.get(ENV_PREFIX + key.upper())
        if value is not None and value.strip() != "":
            merged[field] = value
    merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return merged


# Settings field -> its key in the environment (after the prefix, upper case) and in the file.
# Host and port carry the plane's name because the environment and the file are shared by both planes.
_KEYS = {
    "database_url": "database_url",
    "admin_tokens": "admin_tokens",
    "nats_url": "nats_url",
    "bus_namespace": "bus_namespace",
    "log_level": "log_level",
    "host": "controlplane_host",
    "port": "controlplane_port",
    "publish_interval": "publish_interval",
    "dataplane_ttl": "dataplane_ttl",
    "monitor_backends": "monitor_backends",
    "health_interval": "health_interval",
    "health_timeout": "health_timeout",
    "ejected_probe_gap": "ejected_probe_gap",
    "inventory_interval": "inventory_interval",
    "sync_parallelism": "sync_parallelism",
    "sync_parallelism_per_backend": "sync_parallelism_per_backend",
    "sync_max_attempts": "sync_max_attempts",
    "sync_retry_delay": "sync_retry_delay",
    "sync_remove_unrequired": "sync_remove_unrequired",
    "backend_ca_file": "backend_ca_file",
    "backend_tls_verify": "backend_tls_verify",
    "replica_id": "controlplane_id",
    "advertise_url": "controlplane_url",
    "lease_ttl": "lease_ttl",
    "lease_renew": "lease_renew",
    "max_frontends": "max_frontends",
    "max_backends": "max_backends",
    "max_apikeys": "max_apikeys",
    "log_format": "log_format",
    "log_syslog": "log_syslog",
    "metrics": "metrics",
    "metrics_port": "controlplane_metrics_port",
    "metrics_token": "metrics_token",
    "secrets_key": "secrets_key",
    "secrets_key_file": "secrets_key_file",
    "secrets_previous_keys": "secrets_previous_keys",
    "nats_user": "nats_user",
    "nats_password": "nats_password",
    "nats_ca_file": "nats_ca_file",
    "nats_cert_file": "nats_cert_file",
    "nats_key_file": "nats_key_file",
    "snapshot_signing_key_file": "snapshot_signing_key_file",
    "cors_origins": "cors_origins",
}


def env_name(field: str) -> str:
    """The environment variable of a Settings field, e.g. ``OLLAMAFLOW_MAX_BACKENDS``."""
    return _env_name(field)


def _env_name(field: str) -> str:
    return ENV_PREFIX + _KEYS[field].upper()


def _read_file(path: Path) -> dict[str, Any]:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    return {field: raw[key] for field, key in _KEYS.items() if key in raw}


def _text(values: Mapping[str, Any], field: str) -> str:
    value = values.get(field)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{_env_name(field)} must be a non-empty string, got {value!r}")
    return value.strip()


def _number(
    values: Mapping[str, Any], field: str, *, low: float, high: float | None = None, integer: bool = False
) -> float:
    value = values.get(field)
    name = _env_name(field)
    try:
        if isinstance(value, bool):
            raise ValueError
        number = int(value) if integer else float(value)
    except (TypeError, ValueError):
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{name} must be {kind}, got {value!r}") from None
    if number < low or (high is not None and number > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ConfigError(f"{name} must be {bounds}, got {value!r}")
    return number


def _flag(values: Mapping[str, Any], field: str) -> bool:
    value = values.get(field)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{_env_name(field)} must be true or false, got {value!r}")


def _tokens(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, list | tuple):
        items = [str(v) for v in value]
    else:
        raise ConfigError(f"{ENV_PREFIX}ADMIN_TOKENS must be a comma-separated string or a list")
    return tuple(t.strip() for t in items if t.strip())


def _redact_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    userinfo, _, hostpart = rest.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{hostpart}" if ":" in userinfo else url
