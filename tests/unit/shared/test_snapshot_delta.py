"""Snapshot deltas: the control plane's sealer tells a snapshot as edits of the last one published, and
a data plane's decoder rebuilds from them exactly the snapshot (and the bytes) the whole would give,
refusing any delta that does not fit what it holds or does not rebuild the signed content hash."""

from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from shared.signing import sign
from shared.snapshot import Snapshot, decode
from shared.snapshot_codec import SnapshotDecoder, SnapshotSealer
from shared.snapshot_delta import Edit, SnapshotDelta, diff, patch
from tests.support.signing import fixed_signer
from tests.unit.shared.test_snapshot_codec import AT, _changes

_items = st.dictionaries(st.text("abcdefgh", min_size=1, max_size=3), st.sampled_from([b"1", b"2", b"3"]))


@given(_items, _items)
def test_patching_the_old_list_with_its_diff_gives_the_new_one(
    old: dict[str, bytes], new: dict[str, bytes]
) -> None:
    old_ids, new_ids = sorted(old), sorted(new)
    before = [old[i] for i in old_ids]
    after = [new[i] for i in new_ids]
    edits = diff(old_ids, before, new_ids, after)
    changed = [bytes(raw) for edit in edits for raw in edit.new]
    assert patch(before, edits, changed) == after
    # Only what changed travels: an item kept with its id and bytes is never in an edit.
    kept = sum(1 for i in old_ids if new.get(i) == old[i])
    assert len(changed) == len(after) - kept


def test_patch_refuses_edits_out_of_order_or_range() -> None:
    base = ["a", "b", "c"]
    assert patch(base, [Edit(1, 2, (msgspec.Raw(b"1"),))], ["B"]) == ["a", "B", "c"]
    assert patch(base, [Edit(2, 3), Edit(0, 1)], []) is None  # out of order
    assert patch(base, [Edit(2, 4)], []) is None  # past the end
    assert patch(base, [Edit(2, 1)], []) is None  # ends before it starts
    assert patch(base, [Edit(0, 1)], ["extra"]) is None  # more new items than the edits hold


def _sealed(sealer: SnapshotSealer, revision: int, content: object) -> tuple[Snapshot, bytes]:
    snapshot = sign(sealer.seal(content, revision=revision, generated_at=AT), fixed_signer())  # type: ignore[arg-type]
    return snapshot, sealer.encode(snapshot)


def test_a_delta_rebuilds_the_very_snapshot_and_bytes_the_whole_gives() -> None:
    sealer, decoder = SnapshotSealer(), SnapshotDecoder()
    steps = _changes()  # one backend changed, one added, one removed, equal objects, shares, fewer, more
    snapshot, data = _sealed(sealer, 1, steps[0])
    assert sealer.delta(snapshot) is None  # nothing published yet: no base
    sealer.published(snapshot)
    decoder.decode(data)
    for revision, content in enumerate(steps[1:], start=2):
        snapshot, data = _sealed(sealer, revision, content)
        delta = sealer.delta(snapshot)
        assert delta is not None
        assert len(delta) < len(data) or revision == len(steps)  # the last step re-adds most backends
        rebuilt = decoder.patch(delta, base_hash=msgspec.json.decode(delta)["base_hash"])
        assert rebuilt is not None, f"revision {revision}"
        got, whole = rebuilt
        assert whole == data
        assert got == decode(data)
        sealer.published(snapshot)
    # A one-backend change travels as that backend alone.
    edits = msgspec.json.decode(sealer.delta(snapshot) or b"{}", type=SnapshotDelta)
    assert (edits.frontends, edits.backends, edits.api_keys) == ((), (), ())


def test_a_delta_that_does_not_fit_or_does_not_hash_is_passed_over() -> None:
    sealer, decoder = SnapshotSealer(), SnapshotDecoder()
    steps = _changes()
    first, data = _sealed(sealer, 1, steps[0])
    sealer.published(first)
    decoder.decode(data)
    second, _ = _sealed(sealer, 2, steps[1])
    delta = sealer.delta(second)
    assert delta is not None
    wire = msgspec.json.decode(delta)

    def variant(**changes: object) -> bytes:
        return msgspec.json.encode({**wire, **changes})

    assert decoder.patch(delta, base_hash="another") is None  # the plane holds another snapshot
    assert decoder.patch(variant(base_hash="f" * 64), base_hash="f" * 64) is None  # not what is kept
    assert decoder.patch(variant(delta=2), base_hash=first.content_hash) is None  # a later format
    assert decoder.patch(b"{not json", base_hash=first.content_hash) is None
    # The changed backend altered on the way: the rebuilt content fails the signed hash.
    edit = wire["backends"][0]
    forged = [[edit[0], edit[1], [{**edit[2][0], "base_url": "http://evil:1"}]]]
    assert decoder.patch(variant(backends=forged), base_hash=first.content_hash) is None
    # An edit out of range, a slice not in canonical form, digests out of order.
    assert decoder.patch(variant(backends=[[0, 999, []]]), base_hash=first.content_hash) is None
    spaced = [[edit[0], edit[1], [{"id": edit[2][0]["id"], "base_url": "http://x:1", "name": " "}]]]
    assert decoder.patch(variant(backends=spaced), base_hash=first.content_hash) is None
    assert decoder.patch(variant(admin_token_digests=["b", "a"]), base_hash=first.content_hash) is None
    # None of that spoilt what the decoder keeps: the real delta applies.
    rebuilt = decoder.patch(delta, base_hash=first.content_hash)
    assert rebuilt is not None and rebuilt[0] == decode(sealer.encode(second))


def test_no_delta_without_a_published_base_or_for_other_content() -> None:
    sealer = SnapshotSealer()
    steps = _changes()
    first, _ = _sealed(sealer, 1, steps[0])
    sealer.published(first)
    second, _ = _sealed(sealer, 2, steps[1])
    sealer.published(None)  # the write failed: what data planes hold is not known
    assert sealer.delta(second) is None
    sealer.published(first)  # not of the last seal: ignored as a base
    assert sealer.delta(second) is None
