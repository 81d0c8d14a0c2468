"""A NATS of a test's own with OllamaFlow's users and permissions (``ollamaflow.nats_config``).

The session's shared NATS has no authentication (most tests need none); tests of the bus's
authentication and permissions start this one instead.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ollamaflow.embedded import EmbeddedNats
from ollamaflow.nats_config import ROLE_USERS, NatsUser, literal_password, render_authorization, write_private
from shared.bus import Bus, BusNames
from shared.bus_connect import BusLogin
from shared.bus_permissions import ROLES, Role

__all__ = ["AuthNats", "auth_nats"]


@dataclass(frozen=True, slots=True)
class AuthNats:
    url: str
    names: BusNames
    passwords: dict[Role, str]

    def login(self, role: Role, *, inbox: bool = True) -> BusLogin:
        return BusLogin(
            user=ROLE_USERS[role],
            password=self.passwords[role],
            inbox_prefix=self.names.inbox_prefix(role) if inbox else "",
        )

    def bus(self, role: Role) -> Bus:
        return Bus(self.url, self.names, client_name=f"test-{role}", login=self.login(role))

    def env(self, role: Role) -> dict[str, str]:
        """A plane's settings for this server, as environment variables."""
        return {
            "OLLAMAFLOW_NATS_URL": self.url,
            "OLLAMAFLOW_BUS_NAMESPACE": self.names.namespace,
            "OLLAMAFLOW_NATS_USER": ROLE_USERS[role],
            "OLLAMAFLOW_NATS_PASSWORD": self.passwords[role],
        }


@contextlib.contextmanager
def auth_nats(directory: Path, namespace: str) -> Iterator[AuthNats]:
    names = BusNames(namespace)
    passwords: dict[Role, str] = {role: secrets.token_urlsafe(16) for role in ROLES}
    users = [NatsUser(ROLE_USERS[role], role, literal_password(passwords[role])) for role in ROLES]
    config = directory / "auth.conf"
    write_private(config, render_authorization(names, users))
    server = EmbeddedNats(directory / "nats", config_file=config)
    url = server.start()
    try:
        yield AuthNats(url, names, passwords)
    finally:
        server.stop()
