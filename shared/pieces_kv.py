"""The KV side of snapshot pieces (``shared.pieces`` is the pure side): store them, fetch them in
parallel, list and purge the pieces of old revisions. Used by ``shared.bus.Bus``, which owns the
connection and turns NATS failures into BusError."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Protocol

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from shared.errors import SnapshotRejected
from shared.pieces import Manifest, encode_manifest, join, split

__all__ = ["fetch_pieces", "piece_revisions", "purge_pieces", "store_pieces"]


class _Names(Protocol):
    """What these functions need of ``shared.bus.BusNames`` (which imports this module)."""

    @property
    def bucket_stream(self) -> str: ...

    def snapshot_piece_key(self, revision: int, index: int) -> str: ...
    def bucket_subject(self, key: str) -> str: ...
    @property
    def snapshot_pieces_keys(self) -> str: ...


async def store_pieces(
    kv: KeyValue,
    names: _Names,
    data: bytes,
    piece_size: int,
    *,
    schema: int,
    revision: int,
    content_hash: str,
) -> bytes:
    """Put ``data`` as pieces of ``revision`` (in parallel); the manifest to store under the key."""
    pieces = split(data, piece_size)
    await asyncio.gather(*(kv.put(names.snapshot_piece_key(revision, i), p) for i, p in enumerate(pieces)))
    return encode_manifest(data, len(pieces), schema=schema, revision=revision, content_hash=content_hash)


async def fetch_pieces(kv: KeyValue, names: _Names, manifest: Manifest) -> bytes:
    """The snapshot the manifest names, its pieces fetched in parallel and checked (SnapshotRejected
    when one is missing or they do not match)."""
    keys = [names.snapshot_piece_key(manifest.revision, i) for i in range(manifest.pieces)]
    try:
        entries = await asyncio.gather(*(kv.get(key) for key in keys))
    except nats.js.errors.KeyNotFoundError as exc:
        raise SnapshotRejected(
            f"pieces of snapshot revision {manifest.revision} are missing (replaced meanwhile?)"
        ) from exc
    return join(manifest, [entry.value or b"" for entry in entries])


async def piece_revisions(js: JetStreamContext, names: _Names) -> set[int]:
    """The revisions that have pieces stored (one stream-info request, subjects filtered)."""
    wildcard = names.bucket_subject(names.snapshot_pieces_keys)
    info = await js.stream_info(names.bucket_stream, subjects_filter=wildcard)
    revisions: set[int] = set()
    for subject in (info.state.subjects or {}) if info.state else {}:
        with contextlib.suppress(ValueError, IndexError):
            revisions.add(int(subject.rsplit(".", 2)[-2]))
    return revisions


async def purge_pieces(js: JetStreamContext, names: _Names, doomed: Callable[[int], bool]) -> bool:
    """Purge every piece of each ``doomed`` revision (a stream purge by subject leaves no markers);
    whether any pieces are left."""
    revisions = await piece_revisions(js, names)
    for revision in sorted(r for r in revisions if doomed(r)):
        key = names.snapshot_piece_key(revision, 0).rsplit(".", 1)[0] + ".*"
        await js.purge_stream(names.bucket_stream, subject=names.bucket_subject(key))
        revisions.discard(revision)
    return bool(revisions)
