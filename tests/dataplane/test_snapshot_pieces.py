"""A data plane follows snapshots stored in pieces: it applies them whole, caches them whole, and
never applies a set of pieces that does not match its manifest."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest

from dataplane.settings import DataPlaneSettings
from shared.bus import Bus, BusNames
from shared.pieces import encode_manifest, split
from shared.snapshot import decode
from tests.dataplane.harness import SnapshotWriter, content, eventually, running_dataplane, snapshot_bytes

PIECE = 2048


@pytest.fixture
async def piece_writer(nats_url: str, bus_namespace: str) -> AsyncIterator[SnapshotWriter]:
    bus = Bus(nats_url, BusNames(bus_namespace), client_name="pieces-test", piece_size=PIECE)
    await bus.connect()
    try:
        yield SnapshotWriter(bus)
    finally:
        await bus.close()


def _many(url: str, count: int = 40) -> dict[str, str]:
    return {f"b{i:02d}": url for i in range(count)}


async def test_a_snapshot_in_pieces_is_applied_whole_and_cached_whole(
    backend_urls: list[str], dp_settings: DataPlaneSettings, piece_writer: SnapshotWriter, tmp_path: Path
) -> None:
    cache = tmp_path / "snapshot.json"
    data = snapshot_bytes(content(_many(backend_urls[0])), 1)
    assert len(data) > 4 * PIECE
    async with running_dataplane(dataclasses.replace(dp_settings, snapshot_cache=cache)) as dp:
        await piece_writer.write(data, 1)
        await dp.wait_revision(1)
        snapshot = dp.app.state.snapshot
        assert snapshot is not None and len(snapshot.content.backends) == 40
        await eventually(lambda: cache.exists() and cache.read_bytes() == data, what="whole snapshot cached")


async def test_pieces_that_do_not_match_their_manifest_are_never_applied(
    backend_urls: list[str],
    dp_settings: DataPlaneSettings,
    piece_writer: SnapshotWriter,
    nats_url: str,
    bus_namespace: str,
) -> None:
    a, b, _ = backend_urls
    async with running_dataplane(dp_settings) as dp:
        await piece_writer.publish(content(_many(a)), 1)
        await dp.wait_revision(1)

        # Revision 2 as a writer would store it, but one piece changed on the way (same length).
        data = snapshot_bytes(content(_many(b)), 2)
        pieces = split(data, PIECE)
        pieces[1] = pieces[1].replace(b'"b', b'"c')
        names = BusNames(bus_namespace)
        nc = await nats.connect(nats_url)
        try:
            kv = await nc.jetstream().key_value(names.bucket)
            for index, piece in enumerate(pieces):
                await kv.put(names.snapshot_piece_key(2, index), piece)
            manifest = encode_manifest(
                data, len(pieces), schema=1, revision=2, content_hash=decode(data).content_hash
            )
            await kv.put(names.snapshot_key, manifest)
        finally:
            await nc.close()
        await eventually(lambda: "manifest's hash" in dp.app.state.error, what="pieces refused")
        assert dp.app.state.revision == 1

        await piece_writer.publish(content(_many(b)), 3)
        await dp.wait_revision(3)
        assert dp.app.state.error == ""
