"""How a plane logs in to NATS: credentials, TLS and its reply inbox, from the plane's settings.

Both planes read the same keys (environment ``OLLAMAFLOW_<KEY>``, or the config file):

- ``NATS_USER`` / ``NATS_PASSWORD``: the plane's NATS user (``nats://user:password@host`` in the URL
  works too);
- ``NATS_CA_FILE``: a PEM bundle of CAs to verify the NATS server with; setting it (or a ``tls://``
  URL) turns TLS on;
- ``NATS_CERT_FILE`` / ``NATS_KEY_FILE``: a client certificate and its key, for servers that verify
  clients (mutual TLS).

``BusLogin`` carries them to ``shared.bus.Bus``; ``connect_options`` turns them into nats-py's.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from shared.errors import ConfigError

__all__ = ["BusLogin", "LoginSettings", "connect_options", "uses_tls"]


class LoginSettings(Protocol):
    """What either plane's settings hold about logging in to NATS."""

    nats_user: str
    nats_password: str
    nats_ca_file: Path | None
    nats_cert_file: Path | None
    nats_key_file: Path | None


@dataclass(frozen=True, slots=True)
class BusLogin:
    user: str = ""
    password: str = ""
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    inbox_prefix: str = ""  # "": nats-py's default ``_INBOX``

    @classmethod
    def of(cls, settings: LoginSettings, *, inbox_prefix: str) -> BusLogin:
        """The login a plane's settings describe (both planes name these settings alike)."""
        return cls(
            user=settings.nats_user,
            password=settings.nats_password,
            ca_file=settings.nats_ca_file,
            cert_file=settings.nats_cert_file,
            key_file=settings.nats_key_file,
            inbox_prefix=inbox_prefix,
        )

    def __repr__(self) -> str:
        # The password never reaches a log line or a traceback.
        password = "***" if self.password else ""
        return (
            f"BusLogin(user={self.user!r}, password={password!r}, ca_file={self.ca_file!r}, "
            f"cert_file={self.cert_file!r}, key_file={self.key_file!r})"
        )


def uses_tls(url: str, login: BusLogin) -> bool:
    tls_url = url.strip().lower().startswith("tls://")
    return tls_url or login.ca_file is not None or login.cert_file is not None


def connect_options(url: str, login: BusLogin) -> dict[str, Any]:
    """Keyword arguments for ``nats.connect``; ConfigError naming the setting for an unusable file."""
    options: dict[str, Any] = {}
    if login.user:
        options["user"] = login.user
        options["password"] = login.password
    if login.inbox_prefix:
        options["inbox_prefix"] = login.inbox_prefix
    if uses_tls(url, login):
        options["tls"] = _tls_context(login)
    return options


def _tls_context(login: BusLogin) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if login.ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(login.ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"OLLAMAFLOW_NATS_CA_FILE: cannot load CA bundle {login.ca_file}: {exc}"
            ) from exc
    if (login.cert_file is None) != (login.key_file is None):
        raise ConfigError(
            "OLLAMAFLOW_NATS_CERT_FILE and OLLAMAFLOW_NATS_KEY_FILE go together: set both or neither"
        )
    if login.cert_file is not None and login.key_file is not None:
        try:
            context.load_cert_chain(certfile=str(login.cert_file), keyfile=str(login.key_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"OLLAMAFLOW_NATS_CERT_FILE/OLLAMAFLOW_NATS_KEY_FILE: cannot load {login.cert_file}: {exc}"
            ) from exc
    return context
