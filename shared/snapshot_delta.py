"""PURE: a snapshot told as its changes against the one before it, for data planes that hold that one.

An admin write or a health change touches one backend of a snapshot that is most of a megabyte. The
control plane still stores every snapshot whole (the KV key is the truth: a data plane that starts, or
missed anything, reads it there), but first it sends the *delta*, a message of a few hundred bytes on a
core subject (``BusNames.snapshot_delta_subject``): for each list of the content (frontends, backends,
data planes, API keys), the runs of the previous snapshot's encoded items that are replaced, and what
replaces them. A data plane holding the base snapshot's content (``base_hash``) rebuilds the new
content from it and checks it exactly as it checks a whole snapshot: the rebuilt content must hash to
``content_hash`` and the signature (the very one the stored snapshot carries) must be the control
plane's. A delta for another base, or lost, costs nothing: the whole snapshot follows on the KV watch.

Which is why a delta needs no trust of its own: it is a shorter way to the same bytes, checked by the
same hash and signature.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Sequence
from typing import TypeVar

import msgspec

from shared.snapshot import SnapshotSignature

__all__ = ["DELTA_FORMAT", "MAX_DELTA_BYTES", "Edit", "SnapshotDelta", "diff", "patch"]

DELTA_FORMAT = 1
# A delta larger than this is not sent (data planes take the whole snapshot from the KV watch): past it
# the whole is about as quick, and a core NATS message must stay well below max_payload.
MAX_DELTA_BYTES = 256 * 1024

T = TypeVar("T")


class Edit(msgspec.Struct, frozen=True, array_like=True):
    """The base list's items ``start``..``end`` (end excluded) replaced by ``new`` (encoded items)."""

    start: int
    end: int
    new: tuple[msgspec.Raw, ...] = ()


class SnapshotDelta(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot's header and signature, and its content as edits of the base snapshot's content."""

    delta: int  # DELTA_FORMAT; a reader ignores a format it does not know
    base_hash: str  # the content hash of the snapshot these edits apply to
    schema: int
    revision: int
    content_hash: str
    generated_at: str
    signature: SnapshotSignature | None = None
    frontends: tuple[Edit, ...] = ()
    backends: tuple[Edit, ...] = ()
    dataplanes: tuple[Edit, ...] = ()
    api_keys: tuple[Edit, ...] = ()
    admin_token_digests: tuple[str, ...] = ()


def diff(
    old_ids: Sequence[str], old: Sequence[bytes], new_ids: Sequence[str], new: Sequence[bytes]
) -> tuple[Edit, ...]:
    """The edits that turn ``old`` into ``new``: both lists of encoded items in id order (canonical),
    ids alongside. Items that kept their id and bytes are not mentioned."""
    if old_ids == new_ids:  # the usual change: the same items, some re-encoded (found in C)
        changed = itertools.compress(range(len(new)), map(operator.ne, old, new))
        edits: list[Edit] = []
        for _, run in itertools.groupby(enumerate(changed), lambda pair: pair[1] - pair[0]):
            at = [i for _, i in run]
            edits.append(Edit(at[0], at[-1] + 1, tuple(msgspec.Raw(new[i]) for i in at)))
        return tuple(edits)
    # Items added or removed: merge the two id-ordered lists.
    edits = []
    start = -1  # where the open edit starts in ``old``; -1: none open
    added: list[msgspec.Raw] = []
    i = j = 0
    while i < len(old) or j < len(new):
        if i < len(old) and j < len(new) and old_ids[i] == new_ids[j] and old[i] == new[j]:
            if start >= 0:
                edits.append(Edit(start, i, tuple(added)))
                start, added = -1, []
            i += 1
            j += 1
            continue
        if start < 0:
            start = i
        if i < len(old) and j < len(new) and old_ids[i] == new_ids[j]:  # re-encoded
            added.append(msgspec.Raw(new[j]))
            i += 1
            j += 1
        elif j >= len(new) or (i < len(old) and old_ids[i] < new_ids[j]):  # removed
            i += 1
        else:  # added
            added.append(msgspec.Raw(new[j]))
            j += 1
    if start >= 0:
        edits.append(Edit(start, i, tuple(added)))
    return tuple(edits)


def patch(base: Sequence[T], edits: Sequence[Edit], changed: Sequence[T]) -> list[T] | None:
    """``base`` with each edit's span replaced by the edit's share of ``changed`` (the new items of all
    edits in order, as the caller made them of ``Edit.new``); None when the edits are out of order or
    out of range (a delta not made by ``diff``)."""
    out: list[T] = []
    at = taken = 0
    for edit in edits:
        if not at <= edit.start <= edit.end <= len(base):
            return None
        out.extend(base[at : edit.start])
        out.extend(changed[taken : taken + len(edit.new)])
        taken += len(edit.new)
        at = edit.end
    if taken != len(changed):
        return None
    out.extend(base[at:])
    return out
