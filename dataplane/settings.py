"""Data-plane settings: defaults, then an optional TOML file, then the environment, then CLI options.

The file holds the environment's keys in lower case without the ``OLLAMAFLOW_`` prefix
(``nats_url = "..."``). Bad values raise ConfigError with the offending key named.
"""

from __future__ import annotations

import math
import os
import secrets
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from shared.bus import DEFAULT_NAMESPACE
from shared.cors import parse_origins
from shared.errors import ConfigError
from shared.logformat import LOG_FORMATS, syslog_address
from shared.secret_box import Keyring, load_keyring

__all__ = ["MAX_WORKERS", "DataPlaneSettings", "load_settings"]

_PREFIX = "OLLAMAFLOW_"
UPSTREAM_CLIENTS = ("builtin", "aiohttp")


@dataclass(frozen=True, slots=True)
class DataPlaneSettings:
    nats_url: str = "nats://127.0.0.1:4222"
    bus_namespace: str = DEFAULT_NAMESPACE
    log_level: str = "INFO"
    dataplane_host: str = "0.0.0.0"
    dataplane_port: int = 43411
    dataplane_id: str = ""  # empty: load_settings derives hostname-port-random suffix
    # Worker processes serving the one port (``ollamaflow dataplane --workers``); 1: this process serves.
    dataplane_workers: int = 1
    snapshot_cache: Path | None = None
    report_interval: float = 1.0
    # Safety net under the KV watch: re-read the snapshot key this often.
    snapshot_poll_interval: float = 2.0
    upstream_connect_timeout: float = 5.0
    upstream_max_connections: int = 1024
    # On SIGTERM: how long requests in flight may run on before they are ended (dataplane.drain).
    drain_timeout: float = 30.0
    # Passive health: server errors in a row that eject a backend, and its rest before a trial request.
    eject_after_errors: int = 3
    eject_cooldown: float = 10.0
    # Client limits (dataplane/http/client_limits.py): what one client connection may make us hold.
    client_max_header_bytes: int = 65536  # request line + headers (the original OllamaFlow's 64 KiB)
    client_max_headers: int = 100
    client_header_timeout: float = 10.0  # from connection open / the next request's first byte
    client_body_timeout: float = 30.0  # the longest wait for the next piece of a request body
    client_keep_alive_timeout: float = 30.0  # idle between requests
    client_send_timeout: float = 60.0  # a client that takes none of our bytes this long is cut off
    client_max_connections: int = 10000
    # JSON request bodies (everything but blob uploads): min(this, the frontend's MaxRequestBodySize).
    max_json_body: int = 32 * 1024 * 1024
    # The upstream client (dataplane.upstream.transport): "builtin" (dataplane.upstream.builtin) or
    # "aiohttp" (the reference implementation; needs the aiohttp package).
    upstream_client: str = "builtin"
    # The largest backend answer a translation reads whole (bytes); larger ones get a 502.
    max_translated_body: int = 64 * 1024 * 1024
    # TLS to https backends (shared.tls): an extra trusted CA bundle, and whether to verify at all.
    backend_ca_file: Path | None = None
    backend_tls_verify: bool = True
    # Logs (shared.logformat): "text" or "json" lines on stderr, and a syslog address ("" for none).
    log_format: str = "text"
    log_syslog: str = ""
    # One line per proxied request on the ollamaflow.access logger (dataplane.observe.request_log).
    access_log: bool = True
    # Prometheus metrics (dataplane.observe.metrics): served at /metrics on the data plane's port, or
    # on a port of their own when this is not 0; with a bearer token when metrics_token is set.
    metrics: bool = True
    dataplane_metrics_port: int = 0
    metrics_token: str = field(default="", repr=False)
    # Model names that get a label of their own; the rest are counted as "other".
    metrics_max_models: int = 100
    # OpenTelemetry traces (dataplane.observe.tracing): an OTLP/HTTP traces endpoint; empty: no traces.
    otel_endpoint: str = ""
    # Opens the backend secrets sealed in the snapshot (shared.secret_box): OLLAMAFLOW_SECRETS_KEY or
    # OLLAMAFLOW_SECRETS_KEY_FILE, and OLLAMAFLOW_SECRETS_PREVIOUS_KEYS during a rotation.
    secrets: Keyring = field(default_factory=Keyring)
    # How this plane logs in to NATS (shared.bus_connect): its user, TLS trust and client certificate.
    nats_user: str = ""
    nats_password: str = field(default="", repr=False)
    nats_ca_file: Path | None = None
    nats_cert_file: Path | None = None
    nats_key_file: Path | None = None
    # Snapshot signatures (shared.signing): the control plane's public key(s), several during a key
    # rotation. Without any, nothing is accepted unless allow_unsigned_snapshots (development only).
    snapshot_public_key_files: tuple[Path, ...] = ()
    allow_unsigned_snapshots: bool = False
    # Browser origins whose pages may call this data plane (dataplane.http.cors, shared.cors); (): no CORS.
    dataplane_cors_origins: tuple[str, ...] = ()


def _path(value: str) -> Path | None:
    return Path(value).expanduser() if value else None


def _paths(value: str) -> tuple[Path, ...]:
    return tuple(Path(part.strip()).expanduser() for part in value.split(",") if part.strip())


def _flag(value: str) -> bool:
    text = value.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _client(value: str) -> str:
    if value not in UPSTREAM_CLIENTS:
        raise ValueError(f"must be one of {', '.join(UPSTREAM_CLIENTS)}")
    return value


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(value: str) -> str:
        text = value.strip().lower()
        if text not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return text

    return parse


def _syslog(value: str) -> str:
    if value.strip():
        syslog_address(value)  # raises ValueError naming the forms it takes
    return value.strip()


def _port(value: str) -> int:
    number = int(value)
    if not 0 <= number <= 65535:
        raise ValueError("must be a port number (0 to 65535)")
    return number


# Far more than the cores of one machine: each worker is a data plane of its own to the control plane.
MAX_WORKERS = 64


def _workers(value: str) -> int:
    number = int(value)
    if not 1 <= number <= MAX_WORKERS:
        raise ValueError(f"must be 1 to {MAX_WORKERS}")
    return number


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(value: str) -> Any:
        number = kind(value)
        if number <= 0:
            raise ValueError("must be positive")
        return number

    return parse


def _non_negative(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(value: str) -> Any:
        number = kind(value)
        if not (math.isfinite(number) and number >= 0):
            raise ValueError("must be a finite number, 0 or more")
        return number

    return parse


_PARSERS: dict[str, Callable[[str], Any]] = {
    "dataplane_port": int,
    "dataplane_workers": _workers,
    "snapshot_cache": _path,
    "report_interval": _positive(float),
    "snapshot_poll_interval": _positive(float),
    "upstream_connect_timeout": _positive(float),
    "upstream_max_connections": _positive(int),
    "drain_timeout": _non_negative(float),
    "eject_after_errors": _positive(int),
    "eject_cooldown": _positive(float),
    "client_max_header_bytes": _positive(int),
    "client_max_headers": _positive(int),
    "client_header_timeout": _positive(float),
    "client_body_timeout": _positive(float),
    "client_keep_alive_timeout": _positive(float),
    "client_send_timeout": _positive(float),
    "client_max_connections": _positive(int),
    "max_json_body": _positive(int),
    "upstream_client": _client,
    "max_translated_body": _positive(int),
    "backend_ca_file": _path,
    "backend_tls_verify": _flag,
    "log_format": _choice(LOG_FORMATS),
    "log_syslog": _syslog,
    "access_log": _flag,
    "metrics": _flag,
    "dataplane_metrics_port": _port,
    "metrics_max_models": _positive(int),
    "nats_ca_file": _path,
    "nats_cert_file": _path,
    "nats_key_file": _path,
    "snapshot_public_key_files": _paths,
    "allow_unsigned_snapshots": _flag,
    "dataplane_cors_origins": parse_origins,
}


# The keyring's sources: read as text, turned into ``secrets`` once all sources are merged.
_KEY_SETTINGS = ("secrets_key", "secrets_key_file", "secrets_previous_keys")


def _parse(values: Mapping[str, object], origin: str) -> dict[str, Any]:
    known = ({f.name for f in fields(DataPlaneSettings)} - {"secrets"}) | set(_KEY_SETTINGS)
    parsed: dict[str, Any] = {}
    for key, raw in values.items():
        if key not in known:
            continue
        if isinstance(raw, list):  # a TOML list, e.g. snapshot_public_key_files = ["a.pem", "b.pem"]
            raw = ",".join(str(item) for item in raw)
        try:
            parsed[key] = _PARSERS.get(key, str)(str(raw))
        except ValueError as exc:
            raise ConfigError(f"{origin}: bad value {raw!r} for {key}: {exc}") from exc
    return parsed


def _from_file(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    return _parse(data, str(path))


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    values = {k[len(_PREFIX) :].lower(): v for k, v in environ.items() if k.startswith(_PREFIX)}
    return _parse(values, "environment")


def load_settings(
    *,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> DataPlaneSettings:
    """Build the settings; ``overrides`` (CLI options) that are None are ignored."""
    environ = os.environ if environ is None else environ
    file_name = config_file or (
        Path(environ[f"{_PREFIX}CONFIG"]) if environ.get(f"{_PREFIX}CONFIG") else None
    )
    values: dict[str, Any] = {}
    if file_name is not None:
        values |= _from_file(file_name)
    values |= _from_env(environ)
    values |= {k: v for k, v in overrides.items() if v is not None}
    key_file = values.pop("secrets_key_file", "")
    values["secrets"] = load_keyring(
        values.pop("secrets_key", ""),
        Path(key_file).expanduser() if key_file else None,
        values.pop("secrets_previous_keys", ""),
    )
    settings = replace(DataPlaneSettings(), **values)
    if not settings.dataplane_id:
        generated = f"{socket.gethostname()}-{settings.dataplane_port}-{secrets.token_hex(3)}"
        settings = replace(settings, dataplane_id=generated)
    return settings
