"""Applying snapshots: newer ones swap the table, flawed ones are rejected, the disk cache round-trips."""

from __future__ import annotations

import stat
from pathlib import Path

import msgspec

from dataplane.state import SnapshotState
from shared.snapshot import BackendView, FrontendView, Snapshot, SnapshotContent, encode, seal
from shared.snapshot_codec import SnapshotSealer
from tests.dataplane.harness import eventually
from tests.support.signing import fixed_trust, sign_for_tests


def snapshot_bytes(revision: int, backends: tuple[str, ...] = ("a",), *, schema: int | None = None) -> bytes:
    content = SnapshotContent(
        frontends=(FrontendView(id="f", backends=backends),),
        backends=tuple(BackendView(id=b, base_url=f"http://{b}:1") for b in backends),
    )
    data = encode(sign_for_tests(seal(content, revision=revision, generated_at="2025-01-01T00:00:00Z")))
    if schema is not None:
        raw = msgspec.json.decode(data)
        raw["schema"] = schema
        data = msgspec.json.encode(raw)
    return data


def _tamper(data: bytes) -> bytes:
    raw = msgspec.json.decode(data)
    raw["content"]["backends"][0]["base_url"] = "http://evil:1"
    return msgspec.json.encode(raw)


def _pick(state: SnapshotState) -> str:
    from dataplane.routing.table import RequestKind

    return state.table.frontend_for("x").pool(RequestKind.COMPLETIONS).pick().id


def test_newer_snapshots_apply_and_flawed_ones_are_rejected_keeping_the_last_good() -> None:
    state = SnapshotState(trust=fixed_trust())
    assert state.apply(snapshot_bytes(2), source="t")
    assert (state.revision, state.error, _pick(state)) == (2, "", "a")

    assert not state.apply(snapshot_bytes(1, ("b",)), source="t")
    assert "older" in state.error
    assert not state.apply(_tamper(snapshot_bytes(3, ("b",))), source="t")
    assert "hash" in state.error
    assert not state.apply(snapshot_bytes(4, ("b",), schema=2), source="t")
    assert "schema" in state.error
    assert not state.apply(b"not json", source="t")
    assert (state.revision, _pick(state)) == (2, "a")

    assert state.apply(snapshot_bytes(5, ("b",)), source="t")
    assert (state.revision, state.error, _pick(state)) == (5, "", "b")
    assert not state.apply(snapshot_bytes(5, ("b",)), source="t")  # the same again changes nothing


def test_cache_is_written_atomically_and_loaded_at_start(tmp_path: Path) -> None:
    cache = tmp_path / "sub" / "snapshot.json"
    first = SnapshotState(cache_path=cache, trust=fixed_trust())
    assert not first.load_cache()  # nothing cached yet
    first.apply(snapshot_bytes(7), source="t")
    assert cache.read_bytes() == snapshot_bytes(7)
    assert [p.name for p in cache.parent.iterdir()] == ["snapshot.json"]

    second = SnapshotState(cache_path=cache, trust=fixed_trust())
    assert second.load_cache()
    assert second.revision == 7

    cache.write_bytes(b"garbage")
    third = SnapshotState(cache_path=cache, trust=fixed_trust())
    assert not third.load_cache()
    assert third.snapshot is None and third.error


async def test_on_a_running_loop_the_cache_is_written_a_moment_later_and_at_shutdown(tmp_path: Path) -> None:
    cache = tmp_path / "snapshot.json"
    state = SnapshotState(cache_path=cache, trust=fixed_trust())
    assert state.apply(snapshot_bytes(1), source="t")
    assert state.apply(snapshot_bytes(2, ("b",)), source="t")
    assert not cache.exists()  # the report that the revision is applied goes out first
    await eventually(cache.exists, what="the cache written")
    assert cache.read_bytes() == snapshot_bytes(2, ("b",))  # one write, of the newest

    assert state.apply(snapshot_bytes(3, ("c",)), source="t")
    state.save_now()  # at shutdown: a pending write is done at once
    assert cache.read_bytes() == snapshot_bytes(3, ("c",))
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600


def test_a_delta_running_ahead_of_its_write_makes_the_older_stored_snapshot_no_refusal() -> None:
    """A delta is applied before its snapshot is stored: meanwhile a re-read (or a watch that lags)
    meets the older stored one. That is passed over without a refusal; once the delta's own snapshot
    was seen on the bus, an older one is refused and reported as ever."""
    sealer = SnapshotSealer()

    def sealed(revision: int, backends: tuple[str, ...]) -> tuple[Snapshot, bytes]:
        content = SnapshotContent(
            frontends=(FrontendView(id="f", backends=backends),),
            backends=tuple(BackendView(id=b, base_url=f"http://{b}:1") for b in backends),
        )
        snapshot = sign_for_tests(
            sealer.seal(content, revision=revision, generated_at="2025-01-01T00:00:00Z")
        )
        return snapshot, sealer.encode(snapshot)

    state = SnapshotState(trust=fixed_trust())
    first, first_bytes = sealed(1, ("a",))
    sealer.published(first)
    assert state.apply(first_bytes, source="watch")
    second, second_bytes = sealed(2, ("b",))
    delta = sealer.delta(second)
    assert delta is not None and state.apply_delta(delta)
    assert (state.revision, _pick(state)) == (2, "b")

    assert not state.apply(first_bytes, source="re-read")  # the bus still holds revision 1
    assert (state.revision, state.rejected, state.error) == (2, False, "")
    assert not state.apply(second_bytes, source="watch")  # the delta's own write: known at a glance
    assert (state.revision, state.rejected, state.error) == (2, False, "")

    assert not state.apply(first_bytes, source="re-read")  # now truly older than what the bus held
    assert state.rejected and "older" in state.error and state.revision == 2
