"""The publisher reads only the rows that changed since its last read, yet sees every change: by the
admin API, by any other writer (plain SQL here) and deletions."""

from __future__ import annotations

import httpx
import psycopg
from sqlalchemy.engine import make_url

from controlplane.settings import Settings
from shared.snapshot import Snapshot
from tests.controlplane.conftest import TOKEN
from tests.controlplane.harness import running_controlplane, watch_snapshots


def _names(snapshot: Snapshot) -> dict[str, str]:
    return {b.id: b.name for b in snapshot.content.backends}


async def test_every_change_reaches_the_snapshot_whoever_wrote_it(settings: Settings) -> None:
    libpq = make_url(settings.database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with running_controlplane(settings) as running:
        async with (
            watch_snapshots(settings.nats_url, settings.bus_namespace) as watch,
            httpx.AsyncClient(base_url=running.url, headers={"Authorization": f"Bearer {TOKEN}"}) as admin,
        ):
            for i in range(20):
                resp = await admin.put("/v1.0/backends", json={"Identifier": f"b{i:02d}", "Name": f"n{i}"})
                assert resp.status_code == 201, resp.text
            await admin.put("/v1.0/frontends", json={"Identifier": "f", "Backends": ["b00", "b01"]})
            full = await watch.next(lambda s: len(s.content.backends) == 20 and bool(s.content.frontends))

            await admin.patch("/v1.0/backends/b07", json={"Name": "renamed"})
            renamed = await watch.next(lambda s: _names(s).get("b07") == "renamed", after=full.revision)
            assert {k: v for k, v in _names(renamed).items() if k != "b07"} == {
                k: v for k, v in _names(full).items() if k != "b07"
            }

            # A writer the control plane knows nothing of: the next publish still sees it.
            # One transaction: a publish in between must not see one change without the other.
            with psycopg.connect(libpq) as conn, conn.transaction():
                conn.execute("UPDATE backends SET name = 'by hand' WHERE identifier = 'b03'")
                conn.execute("UPDATE frontends SET backends = '[\"b02\"]'::json WHERE identifier = 'f'")
            running.plane.publisher.request(force=True)
            by_hand = await watch.next(lambda s: _names(s).get("b03") == "by hand", after=renamed.revision)
            assert by_hand.content.frontends[0].backends == ("b02",)

            assert (await admin.delete("/v1.0/backends/b11")).status_code == 204
            gone = await watch.next(lambda s: "b11" not in _names(s), after=by_hand.revision)
            assert len(gone.content.backends) == 19 and _names(gone)["b03"] == "by hand"
