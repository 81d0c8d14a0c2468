"""Snapshots larger than one NATS message travel in pieces under KV keys, named by a manifest written
last with compare-and-set; readers get the whole snapshot or nothing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import nats
import pytest

from shared.bus import Bus, BusNames
from shared.errors import SnapshotConflict, SnapshotRejected
from shared.pieces import decode_manifest, is_manifest
from shared.snapshot import BackendView, SnapshotContent, decode, encode, seal

PIECE = 4096


def _snapshot(revision: int, backends: int = 60) -> bytes:
    views = tuple(BackendView(id=f"b{i:03d}", base_url=f"http://10.0.0.{i}:11434") for i in range(backends))
    return encode(
        seal(SnapshotContent(backends=views), revision=revision, generated_at="2030-01-01T00:00:00Z")
    )


@pytest.fixture
async def writer(nats_url: str, bus_namespace: str) -> AsyncIterator[Bus]:
    bus = Bus(nats_url, BusNames(bus_namespace), piece_size=PIECE)
    await bus.connect()
    yield bus
    await bus.close()


@pytest.fixture
async def reader(nats_url: str, bus_namespace: str) -> AsyncIterator[Bus]:
    bus = Bus(nats_url, BusNames(bus_namespace))  # the server's max_payload: reads pieces all the same
    await bus.connect()
    yield bus
    await bus.close()


async def _write(bus: Bus, data: bytes, revision: int) -> int:
    stored = await bus.read_snapshot_head()
    replaces = decode_manifest(stored[0]).revision if stored and is_manifest(stored[0]) else 0
    return await bus.write_snapshot(
        data,
        last=stored[1] if stored else None,
        revision=revision,
        content_hash=decode(data).content_hash,
        replaces=replaces,
    )


async def _piece_revisions(nats_url: str, names: BusNames) -> set[int]:
    nc = await nats.connect(nats_url)
    try:
        info = await nc.jetstream().stream_info(
            names.bucket_stream, subjects_filter=names.bucket_subject(names.snapshot_pieces_keys)
        )
    finally:
        await nc.close()
    return {int(s.split(".")[-2]) for s in (info.state.subjects or {})}


async def test_a_large_snapshot_is_stored_in_pieces_and_read_back_whole(writer: Bus, reader: Bus) -> None:
    data = _snapshot(1)
    assert len(data) > 3 * PIECE
    await _write(writer, data, 1)
    head = await reader.read_snapshot_head()
    assert head is not None and is_manifest(head[0]) and len(head[0]) < 300
    manifest = decode_manifest(head[0])
    assert manifest.revision == 1 and manifest.pieces == -(-len(data) // PIECE)
    assert manifest.content_hash == decode(data).content_hash
    stored = await reader.read_snapshot()
    assert stored is not None and stored[0] == data


async def test_a_small_snapshot_is_still_stored_as_itself(writer: Bus, reader: Bus) -> None:
    data = _snapshot(1, backends=1)
    assert len(data) <= PIECE
    await _write(writer, data, 1)
    head = await reader.read_snapshot_head()
    assert head is not None and head[0] == data


async def test_the_watch_yields_whole_snapshots_in_pieces_and_inline(writer: Bus, reader: Bus) -> None:
    seen: list[bytes] = []

    async def follow() -> None:
        async for data in reader.watch_snapshot():
            seen.append(data)

    task = asyncio.create_task(follow())
    try:
        written = [_snapshot(1), _snapshot(2, backends=1), _snapshot(3, backends=90)]
        for revision, data in enumerate(written, start=1):
            await _write(writer, data, revision)
            for _ in range(200):
                if seen and seen[-1] == data:
                    break
                await asyncio.sleep(0.02)
        assert seen == written
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_watch_does_not_fetch_the_pieces_of_a_snapshot_the_reader_holds(
    writer: Bus, reader: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A data plane that applied a revision from its delta is told of it by the watch as a manifest:
    it neither fetches nor yields it, and takes the next one it does not hold."""
    fetched: list[bytes] = []
    expand = reader.expand_snapshot

    async def counting(head: bytes) -> bytes:
        fetched.append(head)
        return await expand(head)

    monkeypatch.setattr(reader, "expand_snapshot", counting)
    held = _snapshot(1)
    await _write(writer, held, 1)
    held_hash = decode(held).content_hash
    watch = reader.watch_snapshot(
        held=lambda revision, content_hash: (revision, content_hash) == (1, held_hash)
    )
    try:
        following = asyncio.ensure_future(anext(watch))
        await asyncio.sleep(0.3)
        assert not following.done() and fetched == []  # revision 1 is held: not fetched, not yielded
        newer = _snapshot(2)
        await _write(writer, newer, 2)
        assert await asyncio.wait_for(following, 5) == newer
        assert len(fetched) == 1
    finally:
        await watch.aclose()


async def test_pieces_of_older_revisions_are_purged_but_the_replaced_one_is_kept(
    writer: Bus, nats_url: str, bus_namespace: str
) -> None:
    for revision in (1, 2, 3, 4):
        await _write(writer, _snapshot(revision), revision)
    assert await _piece_revisions(nats_url, BusNames(bus_namespace)) == {3, 4}
    await _write(writer, _snapshot(5, backends=1), 5)  # inline now
    assert await _piece_revisions(nats_url, BusNames(bus_namespace)) == {4}
    await _write(writer, _snapshot(6, backends=1), 6)
    assert await _piece_revisions(nats_url, BusNames(bus_namespace)) == set()


async def test_a_writer_that_loses_the_race_stores_nothing_and_leaves_no_pieces(
    writer: Bus, reader: Bus, nats_url: str, bus_namespace: str
) -> None:
    await _write(writer, _snapshot(1), 1)
    stale = await writer.read_snapshot_head()
    assert stale is not None
    await _write(writer, _snapshot(2), 2)  # another replica got there first
    with pytest.raises(SnapshotConflict):
        await writer.write_snapshot(_snapshot(3), last=stale[1], revision=3, replaces=1)
    stored = await reader.read_snapshot()
    assert stored is not None and decode(stored[0]).revision == 2
    assert 3 not in await _piece_revisions(nats_url, BusNames(bus_namespace))


async def test_pieces_that_do_not_match_their_manifest_are_refused(
    writer: Bus, reader: Bus, nats_url: str, bus_namespace: str
) -> None:
    data = _snapshot(7)
    await _write(writer, data, 7)
    names = BusNames(bus_namespace)
    nc = await nats.connect(nats_url)
    try:
        kv = await nc.jetstream().key_value(names.bucket)
        await kv.put(names.snapshot_piece_key(7, 1), b"x" * PIECE)  # same size, other bytes
        with pytest.raises(SnapshotRejected, match="fail the manifest's hash"):
            await reader.read_snapshot()
        await kv.purge(names.snapshot_piece_key(7, 2))  # a piece gone
        with pytest.raises(SnapshotRejected, match="missing"):
            await reader.read_snapshot()
    finally:
        await nc.close()


async def test_the_writer_switches_on_direct_gets_for_a_bucket_made_without_them(
    nats_url: str, bus_namespace: str
) -> None:
    from nats.js.api import KeyValueConfig, StorageType

    names = BusNames(bus_namespace)
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await js.create_key_value(KeyValueConfig(bucket=names.bucket, history=5, storage=StorageType.FILE))
        assert not (await js.stream_info(names.bucket_stream)).config.allow_direct
        writer = Bus(nats_url, names, piece_size=PIECE)
        await writer.connect()
        try:
            await _write(writer, _snapshot(1), 1)
        finally:
            await writer.close()
        assert (await js.stream_info(names.bucket_stream)).config.allow_direct
    finally:
        await nc.close()
