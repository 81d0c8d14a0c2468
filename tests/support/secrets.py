"""The secrets key of the test clusters: every control plane and data plane a test starts holds it, as a
real fleet's planes all hold the same OLLAMAFLOW_SECRETS_KEY. Random per test session."""

from __future__ import annotations

import secrets

from shared.secret_box import load_keyring

__all__ = ["TEST_KEYRING", "TEST_SECRETS_KEY", "secrets_env"]

TEST_SECRETS_KEY = secrets.token_urlsafe(32)
TEST_KEYRING = load_keyring(TEST_SECRETS_KEY)


def secrets_env() -> dict[str, str]:
    """The environment that gives a plane started as a process the test key."""
    return {"OLLAMAFLOW_SECRETS_KEY": TEST_SECRETS_KEY}
