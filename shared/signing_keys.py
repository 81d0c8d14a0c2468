"""Snapshot signing keys on disk: PEM files, read at start-up, written by ``ollamaflow keys`` and ``up``.

The private key is PKCS#8 PEM (``-----BEGIN PRIVATE KEY-----``), the public key SubjectPublicKeyInfo
PEM (``-----BEGIN PUBLIC KEY-----``), both unencrypted: the same files ``openssl genpkey -algorithm
ed25519`` and ``openssl pkey -pubout`` make. Errors name the setting that pointed at the file.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)

from shared.errors import ConfigError
from shared.signing import SnapshotSigner, SnapshotTrust

__all__ = [
    "PRIVATE_KEY_NAME",
    "PUBLIC_KEY_NAME",
    "ensure_key_pair",
    "load_signer",
    "load_trust",
    "new_key_pair",
]

PRIVATE_KEY_NAME = "snapshot-signing.pem"
PUBLIC_KEY_NAME = "snapshot-signing.pub.pem"
_MAX_KEY_FILE = 64 * 1024  # a PEM key is ~120 bytes; anything far larger is the wrong file


def _read(path: Path, setting: str) -> bytes:
    try:
        with path.open("rb") as file:
            data = file.read(_MAX_KEY_FILE + 1)
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot read {path}: {exc.strerror or exc}") from exc
    if len(data) > _MAX_KEY_FILE:
        raise ConfigError(f"{setting}: {path} is too large to be a key file")
    return data


def load_signer(path: Path, *, setting: str = "OLLAMAFLOW_SNAPSHOT_SIGNING_KEY_FILE") -> SnapshotSigner:
    """The ed25519 private key in the PEM file ``path``."""
    try:
        key = load_pem_private_key(_read(path, setting), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{setting}: {path} is not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{setting}: {path} holds a {type(key).__name__}, not an ed25519 key")
    return SnapshotSigner(key)


def load_public_key(path: Path, *, setting: str) -> Ed25519PublicKey:
    try:
        key = load_pem_public_key(_read(path, setting))
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{setting}: {path} is not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{setting}: {path} holds a {type(key).__name__}, not an ed25519 key")
    return key


def load_trust(
    paths: Iterable[Path],
    *,
    allow_unsigned: bool = False,
    setting: str = "OLLAMAFLOW_SNAPSHOT_PUBLIC_KEY_FILES",
) -> SnapshotTrust:
    """The public keys a data plane trusts. Without any, ``allow_unsigned`` must say so explicitly:
    a data plane that could accept no snapshot at all is a configuration error, said at start."""
    keys = [load_public_key(path, setting=setting) for path in paths]
    if not keys and not allow_unsigned:
        raise ConfigError(
            f"{setting} is required: the public key(s) of the control plane's snapshot signing key "
            "(make a pair with `ollamaflow keys`), or OLLAMAFLOW_ALLOW_UNSIGNED_SNAPSHOTS=true to "
            "accept unsigned snapshots (development only)"
        )
    return SnapshotTrust.of(keys, allow_unsigned=allow_unsigned)


def new_key_pair() -> tuple[bytes, bytes]:
    """A fresh key pair as (private PEM, public PEM)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    public = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    return private, public


def ensure_key_pair(directory: Path) -> tuple[Path, Path]:
    """The key pair in ``directory`` (private owner-only), made if missing; (private, public) paths.

    An existing pair is kept, so restarts and repeated runs keep trusting the same key. A private key
    without its public half gets the public half written again.
    """
    directory.mkdir(parents=True, exist_ok=True)
    private_path, public_path = directory / PRIVATE_KEY_NAME, directory / PUBLIC_KEY_NAME
    if not private_path.exists():
        private, _ = new_key_pair()
        _write_private(private_path, private)
    signer = load_signer(private_path, setting=str(private_path))
    public = signer.private_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    if not public_path.exists() or public_path.read_bytes() != public:
        tmp = public_path.with_name(public_path.name + ".tmp")
        tmp.write_bytes(public)
        tmp.chmod(0o644)
        os.replace(tmp, public_path)
    return private_path, public_path


def _write_private(path: Path, data: bytes) -> None:
    # Created owner-only from the first byte (no window in which another user could open it).
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # a leftover would keep its own mode
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.replace(tmp, path)
