"""The data directory of ``ollamaflow up``: what lives where, the lock that keeps it to one ``up`` at a
time, and the secrets generated once and reused (admin token, secrets key, NATS passwords; the
snapshot signing keys live in ``keys/``), each readable by the owner only."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_DATA_DIR", "DataDir", "DataDirBusy"]

# Relative to the working directory, like a project-local .venv: easy to find, easy to delete.
DEFAULT_DATA_DIR = Path(".ollamaflow")


class DataDirBusy(Exception):
    """Another ``ollamaflow up`` holds this data directory."""


@dataclass(frozen=True, slots=True)
class DataDir:
    root: Path

    @property
    def postgres(self) -> Path:
        return self.root / "postgres"

    @property
    def nats(self) -> Path:
        return self.root / "nats"

    @property
    def logs(self) -> Path:
        """One log file per child process (the embedded servers keep theirs beside their data)."""
        return self.root / "logs"

    @property
    def admin_token_file(self) -> Path:
        return self.root / "admin-token"

    @property
    def controlplane_url_file(self) -> Path:
        """The first control plane's admin URL, written by ``up`` for the admin commands to find."""
        return self.root / "controlplane-url"

    @property
    def keys(self) -> Path:
        """The snapshot signing key pair (``shared.signing_keys``)."""
        return self.root / "keys"

    def nats_password_file(self, role: str) -> Path:
        return self.root / f"nats-{role}.password"

    def nats_password(self, role: str) -> str:
        """The embedded NATS's password for the planes of ``role``, made once and reused."""
        return _secret(self.nats_password_file(role))

    def snapshot_cache(self, index: int) -> Path:
        return self.root / f"dataplane-{index}.snapshot"

    def create(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold an exclusive lock on the directory (POSIX only; elsewhere no lock is taken)."""
        try:
            import fcntl
        except ImportError:
            yield
            return
        with (self.root / "up.lock").open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise DataDirBusy(f"another `ollamaflow up` is using {self.root}") from exc
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def admin_token(self) -> str:
        """The token in ``admin-token``, or a new random one written there readable by the owner only."""
        return _secret(self.admin_token_file)

    @property
    def secrets_key_file(self) -> Path:
        return self.root / "secrets-key"

    def secrets_key(self) -> Path:
        """``secrets-key``, holding the fleet's secrets key (``shared.secret_box``): created once with a new
        random key, readable by the owner only. Losing it loses nothing stored: the control plane seals
        the secrets again with whatever key it gets next."""
        _secret(self.secrets_key_file)
        return self.secrets_key_file


def _secret(path: Path) -> str:
    """The secret in ``path``, or a new random one written there readable by the owner only."""
    if path.exists():
        token = path.read_text().strip()
        if token:
            return token
        path.unlink()
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token
