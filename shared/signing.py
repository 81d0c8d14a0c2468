"""Snapshot signatures: the control plane signs, data planes verify (ed25519).

What is signed is a small canonical header, not the content: ``schema``, ``revision``,
``content_hash``, ``generated_at`` and the signing key's id, JSON-encoded in a fixed order behind a
domain tag. The content hash already binds the content (``shared.snapshot.decode`` recomputes it), so
a signature costs the same ~0.1 ms for ten backends or ten thousand.

A key's id is the first 16 hex digits of the SHA-256 of its raw public key: data planes trusting
several keys (during a rotation) pick the one a snapshot names without trying them all.

Pure: no I/O (key files are read by ``shared.signing_keys``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from shared.errors import SnapshotRejected
from shared.snapshot import Snapshot, SnapshotSignature

__all__ = ["SnapshotSigner", "SnapshotTrust", "key_id", "sign", "signed_message"]

_DOMAIN = b"ollamaflow snapshot signature v1\n"
_KEY_ID_HEX = 16


class _SignedHeader(msgspec.Struct, array_like=True):
    """The signed fields, as a JSON array: their order is part of the format."""

    schema: int
    revision: int
    content_hash: str
    generated_at: str
    key_id: str


_encoder = msgspec.json.Encoder()


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:_KEY_ID_HEX]


def signed_message(snapshot: Snapshot, signing_key_id: str) -> bytes:
    """The exact bytes a signature covers."""
    header = _SignedHeader(
        schema=snapshot.schema,
        revision=snapshot.revision,
        content_hash=snapshot.content_hash,
        generated_at=snapshot.generated_at,
        key_id=signing_key_id,
    )
    return _DOMAIN + _encoder.encode(header)


@dataclass(frozen=True, slots=True)
class SnapshotSigner:
    """The control plane's private key and its id."""

    private_key: Ed25519PrivateKey
    key_id: str = ""

    def __post_init__(self) -> None:
        if not self.key_id:
            object.__setattr__(self, "key_id", key_id(self.private_key.public_key()))


def sign(snapshot: Snapshot, signer: SnapshotSigner) -> Snapshot:
    """``snapshot`` with a signature by ``signer`` (replacing any it had)."""
    value = signer.private_key.sign(signed_message(snapshot, signer.key_id))
    signature = SnapshotSignature(key_id=signer.key_id, value=base64.b64encode(value).decode("ascii"))
    return msgspec.structs.replace(snapshot, signature=signature)


@dataclass(frozen=True, slots=True)
class SnapshotTrust:
    """Which snapshots a data plane accepts: those signed by one of ``keys``; unsigned ones only when
    ``allow_unsigned`` (development). No keys and no ``allow_unsigned``: nothing is accepted."""

    keys: Mapping[str, Ed25519PublicKey] = field(default_factory=lambda: MappingProxyType({}))
    allow_unsigned: bool = False

    @classmethod
    def of(cls, public_keys: Iterable[Ed25519PublicKey], *, allow_unsigned: bool = False) -> SnapshotTrust:
        return cls(MappingProxyType({key_id(k): k for k in public_keys}), allow_unsigned)

    def verify(self, snapshot: Snapshot) -> None:
        """Raise SnapshotRejected unless ``snapshot`` carries a valid signature by a trusted key (or is
        unsigned and unsigned snapshots are allowed)."""
        signature = snapshot.signature
        what = f"snapshot revision {snapshot.revision}"
        if signature is None:
            if self.allow_unsigned:
                return
            raise SnapshotRejected(f"{what} is unsigned; only signed snapshots are accepted")
        public_key = self.keys.get(signature.key_id)
        if public_key is None:
            if not self.keys and self.allow_unsigned:
                return  # nothing to check it against, and unsigned would pass anyway
            raise SnapshotRejected(f"{what} is signed by key {signature.key_id!r}, which is not trusted")
        try:
            value = base64.b64decode(signature.value, validate=True)
            public_key.verify(value, signed_message(snapshot, signature.key_id))
        except (InvalidSignature, binascii.Error, ValueError):
            raise SnapshotRejected(
                f"{what} has a forged or broken signature (key {signature.key_id})"
            ) from None
