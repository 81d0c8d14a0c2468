"""PURE: a snapshot too large for one NATS message, cut into pieces and described by a small manifest.

NATS refuses a message over the server's ``max_payload`` (1 MiB by default), so a snapshot that does
not fit travels as pieces under their own KV keys (``snapshot.v1.<revision>.<index>``), written first,
and the snapshot key then holds this manifest, written last with compare-and-set. A snapshot that fits
is stored as itself, as it always was, so every reader of this major understands it.

A manifest starts with ``{"pieces":`` (its first field), which no snapshot does (a snapshot begins with
its ``schema``): that is how a reader tells the two apart without parsing a large value. The reader
joins the pieces and checks their total size and SHA-256 before it hands the bytes on; the snapshot's
own checks (schema, content hash, revision order) follow as for any snapshot, so a half-received or
mixed-up set of pieces is never applied.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable

import msgspec

from shared.errors import SnapshotRejected

__all__ = [
    "MAX_PIECES",
    "MAX_SNAPSHOT_BYTES",
    "Manifest",
    "decode_manifest",
    "encode_manifest",
    "is_manifest",
    "join",
    "names_held",
    "split",
]

# A reader refuses manifests beyond these: 256 MiB of snapshot (some 250,000 backends), 4,096 pieces.
MAX_SNAPSHOT_BYTES = 256 * 1024 * 1024
MAX_PIECES = 4096
_PREFIX = b'{"pieces":'


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    """Where a snapshot's pieces are and what they must add up to; the snapshot's own header fields
    ride along so that a writer can read the stored revision and content hash without the pieces."""

    pieces: int  # first field: see the module docstring
    size: int
    sha256: str
    schema: int
    revision: int
    content_hash: str = ""


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Manifest)


def is_manifest(head: bytes) -> bool:
    return head.startswith(_PREFIX)


def names_held(head: bytes, held: Callable[[int, str], bool]) -> bool:
    """Whether ``head`` is a manifest of the snapshot ``held(revision, content_hash)`` says the reader
    holds already (then its pieces need no fetching); False for a whole snapshot or a bad manifest
    (which ``decode_manifest`` then refuses, saying why)."""
    if not is_manifest(head):
        return False
    try:
        manifest = decode_manifest(head)
    except SnapshotRejected:
        return False
    return held(manifest.revision, manifest.content_hash)


def split(data: bytes, piece_size: int) -> list[bytes]:
    """``data`` cut into pieces of at most ``piece_size`` bytes (at least one piece)."""
    count = max(1, math.ceil(len(data) / piece_size))
    return [data[i * piece_size : (i + 1) * piece_size] for i in range(count)]


def encode_manifest(data: bytes, pieces: int, *, schema: int, revision: int, content_hash: str) -> bytes:
    manifest = Manifest(
        pieces=pieces,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        schema=schema,
        revision=revision,
        content_hash=content_hash,
    )
    return _encoder.encode(manifest)


def decode_manifest(head: bytes) -> Manifest:
    """The manifest in ``head``; SnapshotRejected if it is malformed or beyond the bounds."""
    try:
        manifest = _decoder.decode(head)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise SnapshotRejected(f"undecodable snapshot manifest: {exc}") from exc
    if not 1 <= manifest.pieces <= MAX_PIECES or not 0 <= manifest.size <= MAX_SNAPSHOT_BYTES:
        raise SnapshotRejected(
            f"snapshot manifest of revision {manifest.revision} is out of bounds "
            f"({manifest.pieces} pieces, {manifest.size} bytes)"
        )
    return manifest


def join(manifest: Manifest, pieces: list[bytes]) -> bytes:
    """The snapshot bytes from its pieces, in order; SnapshotRejected unless they are exactly what the
    manifest describes."""
    data = b"".join(pieces)
    if len(pieces) != manifest.pieces or len(data) != manifest.size:
        raise SnapshotRejected(
            f"snapshot revision {manifest.revision}: {len(pieces)} pieces of {len(data)} bytes, "
            f"the manifest says {manifest.pieces} of {manifest.size}"
        )
    if hashlib.sha256(data).hexdigest() != manifest.sha256:
        raise SnapshotRejected(f"snapshot revision {manifest.revision}: its pieces fail the manifest's hash")
    return data
