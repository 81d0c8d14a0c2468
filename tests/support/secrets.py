"""The secrets key of the test clusters: every control plane and data plane a test starts holds it, as a
real fleet's planes all hold the same OLLAMAFLOW_SECRETS_KEY. Random per test session."""

from __future__ import annotations

import secrets

from shared.secret_box import load_keyring

__all__ = ["TEST_KEYRING", "TEST_SECRETS_KEY", "secrets_env", "stored_backend_secrets"]

TEST_SECRETS_KEY = secrets.token_urlsafe(32)
TEST_KEYRING = load_keyring(TEST_SECRETS_KEY)


def secrets_env() -> dict[str, str]:
    """The environment that gives a plane started as a process the test key."""
    return {"OLLAMAFLOW_SECRETS_KEY": TEST_SECRETS_KEY}


def stored_backend_secrets(
    database_url: str, identifier: str
) -> tuple[str | None, str | None, dict[str, str]]:
    """A backend's BearerToken, Querystring and Headers as the control plane stored them: sealed
    (controlplane.sealed_columns), so opened here with the test key. None / {} when empty."""
    import msgspec
    import psycopg
    from sqlalchemy.engine import make_url

    from shared.secret_box import open_stored

    libpq = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(libpq) as conn:
        row = conn.execute(
            "SELECT bearer_token, querystring, headers FROM backends WHERE identifier=%s", (identifier,)
        ).fetchone()
    assert row is not None, f"no backend {identifier!r}"
    token, query, headers = row
    if token:
        token = open_stored(TEST_KEYRING, "bearer_token", token).decode()
    if query:
        query = open_stored(TEST_KEYRING, "querystring", query).decode()
    if headers:
        headers = msgspec.json.decode(open_stored(TEST_KEYRING, "headers", headers))
    return token, query, headers
