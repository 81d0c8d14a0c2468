"""The snapshot signing key pair every test plane uses, and helpers to sign with it.

One fixed key (from a constant seed) so that module-level helpers can sign without fixtures; the
``snapshot_keys`` fixture (tests/conftest.py) writes it as the PEM files the planes' settings name.
A test that needs a stranger's key makes one with ``other_signer``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from shared.signing import SnapshotSigner, SnapshotTrust, sign
from shared.snapshot import Snapshot

__all__ = [
    "SnapshotKeys",
    "fixed_signer",
    "fixed_trust",
    "other_signer",
    "public_key_beside",
    "sign_for_tests",
    "write_test_keys",
]

_SEED = hashlib.sha256(b"ollamaflow test snapshot signing key").digest()


def fixed_signer() -> SnapshotSigner:
    return SnapshotSigner(Ed25519PrivateKey.from_private_bytes(_SEED))


def other_signer() -> SnapshotSigner:
    """A key nobody trusts."""
    return SnapshotSigner(Ed25519PrivateKey.generate())


def fixed_trust() -> SnapshotTrust:
    return SnapshotTrust.of([fixed_signer().private_key.public_key()])


def sign_for_tests(snapshot: Snapshot) -> Snapshot:
    return sign(snapshot, fixed_signer())


@dataclass(frozen=True, slots=True)
class SnapshotKeys:
    private: Path
    public: Path

    def env(self) -> dict[str, str]:
        """Settings for either plane (each ignores the other's key)."""
        return {
            "OLLAMAFLOW_SNAPSHOT_SIGNING_KEY_FILE": str(self.private),
            "OLLAMAFLOW_SNAPSHOT_PUBLIC_KEY_FILES": str(self.public),
        }


_PRIVATE, _PUBLIC = "test-signing.pem", "test-signing.pub.pem"


def public_key_beside(private: Path) -> Path:
    """The public half of a key pair ``write_test_keys`` wrote, from its private file's path."""
    return private.with_name(_PUBLIC)


def write_test_keys(directory: Path) -> SnapshotKeys:
    directory.mkdir(parents=True, exist_ok=True)
    key = fixed_signer().private_key
    private, public = directory / _PRIVATE, directory / _PUBLIC
    private.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    private.chmod(0o600)
    public.write_bytes(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    return SnapshotKeys(private, public)
