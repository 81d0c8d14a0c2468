"""Snapshot encoding and decoding that redo only what changed since the previous snapshot.

A snapshot of a thousand backends is most of a megabyte of JSON, and a change (an admin write, a health
change) touches one backend of it. ``shared.snapshot``'s ``seal``/``encode``/``decode`` handle the whole
document every time: on the control plane an encode, a decode and two more encodes of it per publish,
on every data plane a decode into some 10,000 objects plus the canonical re-encoding that checks the
content hash. These classes give the very same results (byte for byte, object for value) while keeping
the encoded form of each frontend, backend, API key and data plane's shares from one snapshot to the
next:

- ``SnapshotSealer`` (control plane): ``seal`` encodes and normalises only the views it has not met
  before (by id, the same object or an equal one) and joins the kept encodings into the content's
  canonical bytes; ``encode`` reuses those bytes for the signed snapshot.
- ``SnapshotDecoder`` (data plane): reads the snapshot in one pass with its content as raw slices,
  hashes the slices joined as the encoder joins them, and decodes only the slices it did not see in
  the previous snapshot; the others keep their decoded objects (which also lets the routing table see
  at a glance what is unchanged).

Both also speak deltas (``shared.snapshot_delta``): the sealer tells the last sealed snapshot as its
changes against the last one published, and the decoder rebuilds a snapshot from such a delta and the
slices it keeps, checked by the same content hash.

The decoder's quick path accepts a snapshot only where ``shared.snapshot.decode`` does (which hashes
the canonical re-encoding of what it decoded): the joined slices must hash to ``content_hash`` *and*
be the canonical encoding of what they decode to (each new slice re-encodes to itself, ids are in
canonical order). Anything else (a flaw, another producer's spelling) goes the full way, so a rejection reads
the same as ever. Both keep only the previous snapshot's parts: memory stays bounded by one snapshot.

Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import itertools
import operator
from collections.abc import Sequence
from typing import Any, NamedTuple, TypeVar

import msgspec

from shared.snapshot import (
    SCHEMA_MAJOR,
    ApiKeyView,
    BackendView,
    ClusterView,
    DataPlaneView,
    FrontendView,
    Snapshot,
    SnapshotContent,
    SnapshotSignature,
    canonical,
    decode,
    encode,
)
from shared.snapshot_delta import DELTA_FORMAT, MAX_DELTA_BYTES, Edit, SnapshotDelta, diff, patch

__all__ = ["SnapshotDecoder", "SnapshotSealer"]


# The wire mirrors: the same fields in the same order as the snapshot's own structs, with the parts
# that are kept between snapshots as raw JSON (msgspec writes a Raw verbatim and reads one as a slice).
class _WireSnapshot(msgspec.Struct):
    schema: int
    revision: int
    content_hash: str
    generated_at: str
    content: msgspec.Raw
    signature: SnapshotSignature | None = None


class _WireCluster(msgspec.Struct):
    dataplanes: tuple[msgspec.Raw, ...]
    admin_token_digests: tuple[str, ...]


class _WireContent(msgspec.Struct):
    frontends: tuple[msgspec.Raw, ...]
    backends: tuple[msgspec.Raw, ...]
    cluster: _WireCluster
    api_keys: tuple[msgspec.Raw, ...]


class _WireSnapshotParts(msgspec.Struct):
    """A snapshot as the data plane's quick path reads it: in one pass, its content in raw slices."""

    schema: int
    revision: int
    content_hash: str
    generated_at: str
    content: _WireContent
    signature: SnapshotSignature | None = None


def _mirrors(wire: type[msgspec.Struct], real: type[msgspec.Struct]) -> None:
    # A field added to the snapshot but not here would be dropped silently: refuse to start instead.
    if wire.__struct_fields__ != real.__struct_fields__:
        raise RuntimeError(f"{wire.__name__} no longer mirrors {real.__name__}'s fields")


_mirrors(_WireSnapshot, Snapshot)
_mirrors(_WireSnapshotParts, Snapshot)
_mirrors(_WireContent, SnapshotContent)
_mirrors(_WireCluster, ClusterView)

_encoder = msgspec.json.Encoder(order="deterministic")  # as shared.snapshot's
_parts_decoder = msgspec.json.Decoder(_WireSnapshotParts)
_delta_decoder = msgspec.json.Decoder(SnapshotDelta)

View = TypeVar("View", FrontendView, BackendView, ApiKeyView, DataPlaneView)
# Slices not found where they were in the previous snapshot (nor one place off) beyond which the others
# are looked up by their bytes rather than decoded (many moved: a reordering, several added at once).
_MOVED = 16
_Kept = dict[str, tuple[Any, bytes, Any]]  # id -> (view as given, its canonical bytes, normalised view)


class _Parts:
    """The views of one kind, as given, encoded and normalised (decoded from their encoding)."""

    def __init__(self, kind: type[View]) -> None:
        self._decoder = msgspec.json.Decoder(kind)
        self._kept: _Kept = {}

    def take(self, views: Sequence[View]) -> tuple[list[bytes], list[View]]:
        """The canonical bytes and normalised form of each of ``views`` (in order)."""
        before, now = self._kept, {}
        encoded: list[bytes] = []
        normalised: list[View] = []
        for view in views:
            kept = before.get(view.id)
            if kept is None or not (kept[0] is view or kept[0] == view):
                # As shared.snapshot.seal: one round trip normalises (an int for a float field becomes
                # the float every reader sees); the canonical bytes are the normalised view's.
                norm = self._decoder.decode(_encoder.encode(view))
                kept = (view, _encoder.encode(norm), norm)
            now[view.id] = kept
            encoded.append(kept[1])
            normalised.append(kept[2])
        self._kept = now
        return encoded, normalised


def _raws(parts: list[bytes]) -> tuple[msgspec.Raw, ...]:
    return tuple(msgspec.Raw(p) for p in parts)


class _Sealed(NamedTuple):
    """One sealed content: its normalised form, its canonical bytes, and the encoded items of each of
    its lists in ``_lists`` order, which deltas are made of."""

    content: SnapshotContent
    data: bytes
    encoded: tuple[list[bytes], ...]


def _lists(content: SnapshotContent | _WireContent) -> tuple[Sequence[Any], ...]:
    """The content's lists of items with ids, in one order: frontends, backends, data planes, keys."""
    return (content.frontends, content.backends, content.cluster.dataplanes, content.api_keys)


def _ids(views: Sequence[Any]) -> list[str]:
    return [v.id for v in views]


def _wire_content(lists: Sequence[tuple[msgspec.Raw, ...]], digests: tuple[str, ...]) -> _WireContent:
    frontends, backends, planes, api_keys = lists
    return _WireContent(
        frontends=frontends,
        backends=backends,
        cluster=_WireCluster(dataplanes=planes, admin_token_digests=digests),
        api_keys=api_keys,
    )


def _in_order(digests: tuple[str, ...]) -> bool:
    return list(digests) == sorted(digests)


class SnapshotSealer:
    """``shared.snapshot.seal`` and ``encode`` for a publisher: the same bytes, with the encoding of
    every unchanged frontend, backend, API key and data plane kept from the previous seal."""

    def __init__(self) -> None:
        self._frontends = _Parts(FrontendView)
        self._backends = _Parts(BackendView)
        self._api_keys = _Parts(ApiKeyView)
        self._dataplanes = _Parts(DataPlaneView)
        self._last: _Sealed | None = None
        self._base: tuple[_Sealed, str] | None = None  # the last published content and its hash

    def seal(self, content: SnapshotContent, *, revision: int, generated_at: str) -> Snapshot:
        """As ``shared.snapshot.seal``."""
        content = canonical(content)
        frontends, frontend_views = self._frontends.take(content.frontends)
        backends, backend_views = self._backends.take(content.backends)
        planes, plane_views = self._dataplanes.take(content.cluster.dataplanes)
        api_keys, api_key_views = self._api_keys.take(content.api_keys)
        digests = content.cluster.admin_token_digests
        encoded = (frontends, backends, planes, api_keys)
        data = _encoder.encode(_wire_content([_raws(items) for items in encoded], digests))
        normalised = SnapshotContent(
            frontends=tuple(frontend_views),
            backends=tuple(backend_views),
            cluster=ClusterView(dataplanes=tuple(plane_views), admin_token_digests=digests),
            api_keys=tuple(api_key_views),
        )
        self._last = _Sealed(normalised, data, encoded)
        return Snapshot(
            revision=revision,
            content_hash=hashlib.sha256(data).hexdigest(),
            generated_at=generated_at,
            content=normalised,
        )

    def encode(self, snapshot: Snapshot) -> bytes:
        """As ``shared.snapshot.encode``; quick for a snapshot of the content this sealer sealed last."""
        if self._last is None or snapshot.content is not self._last.content:
            return encode(snapshot)
        return _whole(snapshot, self._last.data)

    def published(self, snapshot: Snapshot | None) -> None:
        """Note the snapshot the data planes now hold (one of this sealer's last seal: the base of the
        next delta), or None when that is not known (then no delta is made)."""
        last = self._last
        if snapshot is not None and last is not None and snapshot.content is last.content:
            self._base = (last, snapshot.content_hash)
        else:
            self._base = None

    def delta(self, snapshot: Snapshot) -> bytes | None:
        """``snapshot`` (of the content sealed last) as a delta against the last one ``published``;
        None without such a base, or when the delta would be too large to be worth sending."""
        last, base = self._last, self._base
        if last is None or base is None or snapshot.content is not last.content:
            return None
        before, base_hash = base
        edits = [
            diff(_ids(old_views), old, _ids(new_views), new)
            for old_views, old, new_views, new in zip(
                _lists(before.content), before.encoded, _lists(last.content), last.encoded, strict=True
            )
        ]
        data = _encoder.encode(
            SnapshotDelta(
                delta=DELTA_FORMAT,
                base_hash=base_hash,
                schema=snapshot.schema,
                revision=snapshot.revision,
                content_hash=snapshot.content_hash,
                generated_at=snapshot.generated_at,
                signature=snapshot.signature,
                frontends=edits[0],
                backends=edits[1],
                dataplanes=edits[2],
                api_keys=edits[3],
                admin_token_digests=snapshot.content.cluster.admin_token_digests,
            )
        )
        return data if len(data) <= MAX_DELTA_BYTES else None


def _whole(snapshot: Snapshot, content: bytes) -> bytes:
    """The encoded snapshot around ``content``, its canonical content bytes: ``encode``'s bytes."""
    return _encoder.encode(
        _WireSnapshot(
            schema=snapshot.schema,
            revision=snapshot.revision,
            content_hash=snapshot.content_hash,
            generated_at=snapshot.generated_at,
            content=msgspec.Raw(content),
            signature=snapshot.signature,
        )
    )


class _Slices:
    """The raw slices of one kind in the previous snapshot and what each decoded to."""

    def __init__(self, kind: type[View]) -> None:
        self._decoder = msgspec.json.Decoder(kind)
        self._raws: tuple[msgspec.Raw, ...] = ()
        self._views: list[Any] = []
        self._by_bytes: dict[bytes, Any] | None = None  # built when a slice moved

    def read(self, raws: tuple[msgspec.Raw, ...]) -> list[Any] | None:
        """The views of ``raws``: kept ones where the bytes are the previous snapshot's, the others
        decoded; None when one does not decode or is not in canonical form (then the caller takes the
        full way, which says why)."""
        before, kept = self._raws, self._views
        if len(raws) == len(before):
            # The usual change (a backend's health, one admin write): every slice where it was, a few
            # of them new. Found by a comparison run in C rather than a Python loop over a thousand.
            changed = list(itertools.compress(range(len(raws)), map(operator.ne, raws, before)))
            if len(changed) <= _MOVED:
                return self._in_place(raws, changed)
        views: list[Any] = []
        by_bytes = None
        shift = misses = 0  # where the previous snapshot's slices are relative to these
        for i, raw in enumerate(raws):
            # The usual case: the same bytes in the same place, or one place off (one added or removed).
            found = False
            for step in (0, 1, -1):
                j = i + shift + step
                if 0 <= j < len(before) and raw == before[j]:
                    views.append(kept[j])
                    shift += step
                    found = True
                    break
            if found:
                continue
            data = bytes(raw)
            misses += 1
            if by_bytes is None and misses > _MOVED:  # many moved: look them up rather than decode
                by_bytes = self._index()
            view = by_bytes.get(data) if by_bytes is not None else None
            if view is None:
                try:
                    view = self._decoder.decode(data)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    return None
                if _encoder.encode(view) != data:
                    return None
            views.append(view)
        if views and any(a.id > b.id for a, b in itertools.pairwise(views)):
            return None  # not in canonical order
        return views

    def _view(self, raw: msgspec.Raw) -> Any | None:
        """What a new slice decodes to; None when it does not, or is not in canonical form."""
        data = bytes(raw)
        try:
            view = self._decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        return view if _encoder.encode(view) == data else None

    def _in_place(self, raws: tuple[msgspec.Raw, ...], changed: list[int]) -> list[Any] | None:
        """``read`` when only the slices at ``changed`` differ from the previous snapshot's."""
        views = list(self._views)
        for i in changed:
            view = self._view(raws[i])
            if view is None:
                return None
            views[i] = view
        # The kept ones were in canonical order: only the new ones' places need a look.
        last = len(views) - 1
        for i in changed:
            if (i > 0 and views[i - 1].id > views[i].id) or (i < last and views[i].id > views[i + 1].id):
                return None
        return views

    def patched(self, edits: tuple[Edit, ...]) -> tuple[tuple[msgspec.Raw, ...], list[Any]] | None:
        """The previous snapshot's slices and views with ``edits`` made; None when an edit does not
        fit them or a new slice does not decode to a view in canonical form and order."""
        if not edits:
            return self._raws, self._views
        new_raws = [raw for edit in edits for raw in edit.new]
        new_views = []
        for raw in new_raws:
            view = self._view(raw)
            if view is None:
                return None
            new_views.append(view)
        raws = patch(self._raws, edits, new_raws)
        views = patch(self._views, edits, new_views)
        if raws is None or views is None:
            return None
        ids = [v.id for v in views]
        if ids != sorted(ids):
            return None  # not in canonical order
        return tuple(raws), views

    def keep(self, raws: tuple[msgspec.Raw, ...], views: list[Any]) -> None:
        self._raws, self._views, self._by_bytes = raws, views, None

    def _index(self) -> dict[bytes, Any]:
        if self._by_bytes is None:
            self._by_bytes = {bytes(r): v for r, v in zip(self._raws, self._views, strict=True)}
        return self._by_bytes


class SnapshotDecoder:
    """``shared.snapshot.decode`` for a data plane: the same snapshots accepted and rejected (with the
    same reasons), decoding only what changed since the snapshot it decoded last."""

    def __init__(self) -> None:
        self._frontends = _Slices(FrontendView)
        self._backends = _Slices(BackendView)
        self._api_keys = _Slices(ApiKeyView)
        self._dataplanes = _Slices(DataPlaneView)
        self._kinds = (self._frontends, self._backends, self._dataplanes, self._api_keys)  # ``_lists`` order
        self._hash = ""  # the content hash of the kept slices: the base a delta must name

    def patch(self, data: bytes, *, base_hash: str) -> tuple[Snapshot, bytes] | None:
        """The snapshot a delta (``shared.snapshot_delta``) makes of the kept slices, and its encoded
        form (``encode``'s bytes, as the control plane stores it); None when ``data`` is not a delta
        this build reads, is for another base than ``base_hash`` (which the kept slices must be), or
        does not rebuild content that hashes to its ``content_hash``. The signature is the caller's
        to check, as for any snapshot."""
        try:
            delta = _delta_decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        if (
            delta.delta != DELTA_FORMAT
            or delta.schema != SCHEMA_MAJOR
            or delta.base_hash != base_hash
            or base_hash != self._hash
        ):
            return None
        digests = delta.admin_token_digests
        edits = (delta.frontends, delta.backends, delta.dataplanes, delta.api_keys)
        patched = [slices.patched(e) for slices, e in zip(self._kinds, edits, strict=True)]
        if not _in_order(digests) or any(p is None for p in patched):
            return None
        raws = [p[0] for p in patched if p is not None]
        views = [p[1] for p in patched if p is not None]
        content = _encoder.encode(_wire_content(raws, digests))
        if hashlib.sha256(content).hexdigest() != delta.content_hash:
            return None
        snapshot = self._keep(delta, raws, views, digests)
        return snapshot, _whole(snapshot, content)

    def _keep(
        self,
        header: _WireSnapshotParts | SnapshotDelta,
        raws: Sequence[tuple[msgspec.Raw, ...]],
        views: Sequence[list[Any]],
        digests: tuple[str, ...],
    ) -> Snapshot:
        """Keep each list's slices and views for the next snapshot, and make this one of them."""
        for slices, kept_raws, kept_views in zip(self._kinds, raws, views, strict=True):
            slices.keep(kept_raws, kept_views)
        self._hash = header.content_hash
        frontends, backends, planes, api_keys = views
        return Snapshot(
            schema=header.schema,
            revision=header.revision,
            content_hash=header.content_hash,
            generated_at=header.generated_at,
            content=SnapshotContent(
                frontends=tuple(frontends),
                backends=tuple(backends),
                cluster=ClusterView(dataplanes=tuple(planes), admin_token_digests=digests),
                api_keys=tuple(api_keys),
            ),
            signature=header.signature,
        )

    def decode(self, data: bytes) -> Snapshot:
        """As ``shared.snapshot.decode``: the snapshot, or SnapshotRejected for any flaw."""
        quick = self._quick(data)
        return quick if quick is not None else decode(data)

    def _quick(self, data: bytes) -> Snapshot | None:
        try:
            # One pass over the bytes: the envelope, and the content as raw slices (reading the content
            # as one raw value first, then its slices, parsed the megabyte twice).
            wire = _parts_decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        if wire.schema != SCHEMA_MAJOR:
            return None
        content = wire.content
        # The slices joined by the encoder's own glue: the canonical content whenever each slice is
        # (checked below for every new one; kept ones are the previous snapshot's, checked then). Its
        # hash is the one the control plane signed, as ``shared.snapshot.decode`` checks it.
        if hashlib.sha256(_encoder.encode(content)).hexdigest() != wire.content_hash:
            return None
        digests = content.cluster.admin_token_digests
        raws = _lists(content)
        views = []
        for slices, slice_raws in zip(self._kinds, raws, strict=True):
            read = slices.read(slice_raws)
            if read is None:
                return None
            views.append(read)
        if not _in_order(digests):
            return None  # not in canonical order
        return self._keep(wire, raws, views, digests)
