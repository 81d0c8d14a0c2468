"""Snapshot publishing against real Postgres and NATS: every change becomes a new, higher revision."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from controlplane.clock import Clock
from controlplane.db import Database
from controlplane.publish.publisher import Publisher
from controlplane.settings import Settings
from ollamaflow.embedded import EmbeddedNats
from shared.bus import Bus, BusNames
from shared.secret_box import BackendSecrets, open_secrets
from shared.signing import SnapshotSigner
from shared.snapshot import BackendView, Snapshot, SnapshotContent, encode, seal
from tests.controlplane.conftest import TOKEN
from tests.controlplane.harness import RunningControlPlane, eventually, running_controlplane, watch_snapshots
from tests.support.processes import free_port
from tests.support.signing import fixed_signer, fixed_trust, other_signer


@pytest.fixture
def own_controlplane(settings: Settings) -> Iterator[RunningControlPlane]:
    """A control plane publishing into this test's own bus namespace."""
    with running_controlplane(settings) as running:
        yield running


def _backend_ids(snapshot: Snapshot) -> set[str]:
    return {b.id for b in snapshot.content.backends}


def _frontend(snapshot: Snapshot, identifier: str):
    return next((f for f in snapshot.content.frontends if f.id == identifier), None)


async def test_every_committed_change_publishes_a_higher_revision(
    own_controlplane: RunningControlPlane, settings: Settings
) -> None:
    async with (
        watch_snapshots(settings.nats_url, settings.bus_namespace) as watch,
        httpx.AsyncClient(
            base_url=own_controlplane.url, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as admin,
    ):
        start = await watch.next()  # the start-up snapshot
        assert start.content.frontends == () and start.content.backends == ()
        # Signed with the configured key: a data plane trusting its public half takes it.
        assert start.signature is not None and start.signature.key_id == fixed_signer().key_id
        fixed_trust().verify(start)

        steps = [
            (
                admin.put("/v1.0/backends", json={"Identifier": "b1", "Hostname": "10.1.2.3", "Port": 11434}),
                lambda s: (
                    _backend_ids(s) == {"b1"} and s.content.backends[0].base_url == "http://10.1.2.3:11434"
                ),
            ),
            (
                admin.put("/v1.0/backends", json={"Identifier": "b2", "ApiFormat": "OpenAI", "Ssl": True}),
                lambda s: _backend_ids(s) == {"b1", "b2"},
            ),
            (
                admin.put(
                    "/v1.0/frontends", json={"Identifier": "f1", "Hostname": "a.test", "Backends": ["b1"]}
                ),
                lambda s: (f := _frontend(s, "f1")) is not None and f.backends == ("b1",),
            ),
            (
                admin.patch("/v1.0/frontends/f1", json={"Backends": ["b2", "b1"], "LoadBalancing": "Random"}),
                lambda s: (f := _frontend(s, "f1")) is not None and f.backends == ("b2", "b1"),
            ),
            (
                admin.put("/v1.0/frontends/f1", json={"Backends": ["b2"], "Active": False}),
                lambda s: (f := _frontend(s, "f1")) is not None and f.backends == ("b2",) and not f.active,
            ),
            (
                admin.patch("/v1.0/backends/b1", json={"Active": False, "Labels": ["eu"]}),
                lambda s: any(
                    b.id == "b1" and not b.active and b.labels == ("eu",) for b in s.content.backends
                ),
            ),
            (admin.delete("/v1.0/backends/b1"), lambda s: _backend_ids(s) == {"b2"}),
            (admin.delete("/v1.0/frontends/f1"), lambda s: s.content.frontends == ()),
        ]
        revision = start.revision
        for request, changed in steps:
            resp = await request
            assert resp.status_code in (200, 201, 204), resp.text
            snapshot = await watch.next(changed, after=revision)
            assert snapshot.revision > revision
            revision = snapshot.revision
        # Revisions on the bus only ever went up.
        revisions = [s.revision for s in watch.seen]
        assert revisions == sorted(set(revisions))


async def test_the_snapshot_carries_credentials_sealed_and_the_admin_view_redacts_them(
    own_controlplane: RunningControlPlane, settings: Settings
) -> None:
    secret, header, query = "tok-for-the-data-plane-only", "hdr-s3cret-value", "q-s3cret-value"
    async with (
        watch_snapshots(settings.nats_url, settings.bus_namespace) as watch,
        httpx.AsyncClient(
            base_url=own_controlplane.url, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as admin,
    ):
        body = {
            "Identifier": "b1",
            "BearerToken": secret,
            "Querystring": f"key={query}",
            "Headers": {"X-Team": header},
        }
        await admin.put("/v1.0/backends", json=body)
        published = await watch.next(lambda s: _backend_ids(s) == {"b1"})
        backend = published.content.backends[0]
        # The data plane needs these to reach the backend: sealed with the fleet's key, never in clear.
        assert (backend.bearer_token, backend.querystring, backend.headers) == (None, None, {})
        assert open_secrets(settings.secrets, "b1", backend.sealed_secrets) == BackendSecrets(
            bearer_token=secret, querystring=f"key={query}", headers={"X-Team": header}
        )
        # What NATS keeps (with its history, on its disk) holds none of them.
        bus = Bus(settings.nats_url, BusNames(settings.bus_namespace), client_name="test-raw")
        await bus.connect()
        try:
            stored = await bus.read_snapshot()
        finally:
            await bus.close()
        assert stored is not None
        for value in (secret, header, query):
            assert value.encode() not in stored[0]

        async def shows_it() -> bool:
            view = (await admin.get("/v1.0/snapshot")).json()
            return view["Revision"] >= published.revision

        await eventually(shows_it)
        resp = await admin.get("/v1.0/snapshot")
        for value in (secret, header, query, backend.sealed_secrets):
            assert value not in resp.text
        view = resp.json()
        assert view["ContentHash"] == published.content_hash
        assert view["SigningKeyId"] == fixed_signer().key_id  # which key signed it (e.g. after a rotation)
        shown = view["Content"]["backends"][0]
        assert (shown["bearer_token"], shown["sealed_secrets"]) == ("<redacted>", "<redacted>")
        assert (shown["headers"], shown["querystring"]) == ({"X-Team": "<redacted>"}, "key=<redacted>")


def _content(tag: str) -> SnapshotContent:
    return SnapshotContent(backends=(BackendView(id=tag, base_url="http://127.0.0.1:1"),))


async def _publisher(
    settings: Settings,
    bus: Bus,
    db: Database,
    contents: list[SnapshotContent],
    *,
    signer: SnapshotSigner | None = None,
) -> Publisher:
    async def content(_previous: SnapshotContent | None, *, reread: bool = True) -> SnapshotContent:
        return contents[-1]

    return Publisher(
        bus, content=content, next_revision=db.next_revision, clock=Clock(), interval=30, signer=signer
    )


async def test_racing_publishers_never_store_a_lower_revision(settings: Settings) -> None:
    """Two replicas publishing as fast as they can: compare-and-set keeps the stored revision rising."""
    names = BusNames(settings.bus_namespace)
    buses = [Bus(settings.nats_url, names), Bus(settings.nats_url, names)]
    dbs = [Database(settings.database_url), Database(settings.database_url)]
    for bus in buses:
        await bus.connect()
    try:
        async with watch_snapshots(settings.nats_url, settings.bus_namespace) as watch:
            contents = [[_content("a0")], [_content("b0")]]
            publishers = [await _publisher(settings, buses[i], dbs[i], contents[i]) for i in range(2)]

            async def hammer(i: int) -> list[Snapshot]:
                stored = []
                for n in range(15):
                    contents[i].append(_content(f"{'ab'[i]}{n}"))
                    snapshot = await publishers[i].publish(force=True)
                    assert snapshot is not None
                    stored.append(snapshot)
                return stored

            results = await asyncio.gather(hammer(0), hammer(1))
            written = sorted(s.revision for r in results for s in r)
            assert len(set(written)) == 30  # every successful write got its own revision
            final = await watch.next(lambda s: s.revision == written[-1])
            assert final.revision == max(written)
            seen = [s.revision for s in watch.seen]
            assert seen == sorted(seen) and len(seen) == len(set(seen))
            # Each publisher's own writes rose too.
            for result in results:
                assert [s.revision for s in result] == sorted(s.revision for s in result)
    finally:
        for bus in buses:
            await bus.close()
        for db in dbs:
            await db.close()


async def test_revision_never_goes_below_the_stored_one(settings: Settings) -> None:
    """NATS may hold a newer revision than the Postgres sequence (e.g. a restored database)."""
    bus = Bus(settings.nats_url, BusNames(settings.bus_namespace))
    db = Database(settings.database_url)
    await bus.connect()
    try:
        far_ahead = seal(_content("old"), revision=10**9, generated_at="2030-01-01T00:00:00Z")
        await bus.write_snapshot(encode(far_ahead), last=None)
        publisher = await _publisher(settings, bus, db, [_content("new")])
        snapshot = await publisher.publish()
        assert snapshot is not None and snapshot.revision == 10**9 + 1
        # The sequence caught up: the next one is higher still.
        publisher_two = await _publisher(settings, bus, db, [_content("newer")])
        assert (await publisher_two.publish()).revision > 10**9 + 1
    finally:
        await bus.close()
        await db.close()


async def test_unchanged_content_is_not_republished_unless_forced(settings: Settings) -> None:
    bus = Bus(settings.nats_url, BusNames(settings.bus_namespace))
    db = Database(settings.database_url)
    await bus.connect()
    try:
        publisher = await _publisher(settings, bus, db, [_content("same")])
        first = await publisher.publish()
        assert first is not None
        assert await publisher.publish() is None  # a timer publish: nothing changed, nothing written
        stored = await bus.read_snapshot()
        assert stored is not None and stored[0] == encode(first)
        forced = await publisher.publish(force=True)  # a committed change always gets a revision
        assert forced is not None and forced.revision > first.revision
        assert forced.content_hash == first.content_hash
    finally:
        await bus.close()
        await db.close()


async def test_a_requested_publish_draws_its_revision_while_reading_and_a_skip_leaves_a_gap(
    settings: Settings,
) -> None:
    bus = Bus(settings.nats_url, BusNames(settings.bus_namespace))
    db = Database(settings.database_url)
    await bus.connect()
    try:
        contents = [_content("e0")]
        publisher = await _publisher(settings, bus, db, contents)
        first = await publisher.publish(eager=True)
        assert first is not None
        assert await publisher.publish(eager=True) is None  # unchanged: its revision goes unused
        contents.append(_content("e1"))
        second = await publisher.publish(eager=True)
        assert second is not None and second.revision > first.revision + 1  # the gap
        stored = await bus.read_snapshot()
        assert stored is not None and stored[0] == encode(second)

        async def broken(_previous: SnapshotContent | None, *, reread: bool = True) -> SnapshotContent:
            raise RuntimeError("the database went away")

        failing = Publisher(bus, content=broken, next_revision=db.next_revision, clock=Clock(), interval=30)
        with pytest.raises(RuntimeError, match="went away"):
            await failing.publish(eager=True)  # the revision drawn meanwhile is waited for, not left behind
    finally:
        await bus.close()
        await db.close()


@pytest.mark.slow
async def test_publishing_catches_up_once_nats_comes_up(settings: Settings, tmp_path: Path) -> None:
    """The control plane starts without NATS, takes changes, and publishes them when NATS appears."""
    server = EmbeddedNats(tmp_path / "nats", port=free_port())
    cut_off = Settings(
        database_url=settings.database_url,
        admin_tokens=settings.admin_tokens,
        nats_url=server.url,
        bus_namespace=settings.bus_namespace,
    )
    with running_controlplane(cut_off, wait_ready=False) as running:
        async with httpx.AsyncClient(
            base_url=running.url, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as admin:
            assert (await admin.put("/v1.0/backends", json={"Identifier": "b1"})).status_code == 201
            assert (await admin.get("/readyz")).status_code == 503
            with server:  # NATS comes up on the address the control plane keeps trying
                async with watch_snapshots(server.url, settings.bus_namespace) as watch:
                    snapshot = await watch.next(lambda s: _backend_ids(s) == {"b1"}, within=20)
                    assert snapshot.revision >= 1

                async def ready() -> bool:
                    return (await admin.get("/readyz")).status_code == 200

                await eventually(ready, within=20)


async def test_a_publisher_that_remembers_its_last_write_still_notices_another_writer(
    settings: Settings,
) -> None:
    """After its own write a publisher starts from memory, not a read; a write by anyone else in between
    must still win neither a lower revision nor a skipped publish."""
    names = BusNames(settings.bus_namespace)
    bus, other = Bus(settings.nats_url, names), Bus(settings.nats_url, names)
    db = Database(settings.database_url)
    await bus.connect()
    await other.connect()
    try:
        contents = [_content("mine")]
        publisher = await _publisher(settings, bus, db, contents)
        first = await publisher.publish()
        assert first is not None
        # Another replica stores a far higher revision with other content.
        stored = await other.read_snapshot_head()
        assert stored is not None
        theirs = seal(_content("theirs"), revision=first.revision + 1000, generated_at="2030-01-01T00:00:00Z")
        await other.write_snapshot(encode(theirs), last=stored[1], revision=theirs.revision)
        # Our content is unchanged since our last write, yet the stored one is not ours: publish it.
        again = await publisher.publish()
        assert again is not None and again.revision > theirs.revision
        assert again.content_hash == first.content_hash
        current = await other.read_snapshot()
        assert current is not None and current[0] == encode(again)
        # And with nobody in between, unchanged content is skipped.
        assert await publisher.publish() is None
    finally:
        await bus.close()
        await other.close()


async def test_a_new_signing_key_republishes_unchanged_content(settings: Settings) -> None:
    """Key rotation: a control plane with a new key signs the current content again at once, so that
    data planes can drop the old key; with its own signature stored, it skips the same content."""
    bus = Bus(settings.nats_url, BusNames(settings.bus_namespace))
    db = Database(settings.database_url)
    await bus.connect()
    try:
        contents = [_content("a0")]
        old = await _publisher(settings, bus, db, contents, signer=fixed_signer())
        first = await old.publish()
        assert first is not None and first.signature is not None
        assert await old.publish() is None  # unchanged, ours

        new_key = other_signer()
        new = await _publisher(settings, bus, db, contents, signer=new_key)
        rotated = await new.publish()
        assert rotated is not None and rotated.signature is not None
        assert rotated.signature.key_id == new_key.key_id != first.signature.key_id
        assert rotated.content_hash == first.content_hash and rotated.revision > first.revision
        assert await new.publish() is None
    finally:
        await bus.close()
        await db.close()


async def test_only_a_configuration_change_the_intervals_check_or_a_retry_reads_the_rows_again(
    settings: Settings,
) -> None:
    bus = Bus(settings.nats_url, BusNames(settings.bus_namespace))
    db = Database(settings.database_url)
    await bus.connect()
    rereads: list[bool] = []
    tags = iter(range(1000))

    async def content(_previous: SnapshotContent | None, *, reread: bool = True) -> SnapshotContent:
        rereads.append(reread)
        return _content(f"r{next(tags)}")

    try:
        publisher = Publisher(
            bus, content=content, next_revision=db.next_revision, clock=Clock(), interval=30
        )
        assert await publisher.publish() is not None  # the interval's check: rows changed by hand show
        assert await publisher.publish(eager=True) is not None  # health or models changed: no new read
        assert await publisher.publish(force=True, eager=True) is not None  # a configuration change
        assert rereads == [True, False, True]
    finally:
        await bus.close()
        await db.close()
