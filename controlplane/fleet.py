"""Keeps the backend monitor and the model synchroniser in step with the configuration.

It reads every backend and frontend when asked (after each committed admin change, a moment later so
that the snapshot publish triggered by the same change goes first) and every ``interval`` seconds (so
changes made through another replica arrive too), and hands them to the monitor (which backends to
probe, and how) and the synchroniser (which models each backend needs). Rows are read incrementally
(``controlplane.publish.rows``) and an unchanged row keeps its probe target.

At start it takes over the health and model lists the last published snapshot recorded, so that a
control-plane restart (or a new leader) does not publish every backend as unknown while the first
probes and reads are on their way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from controlplane.db import Database
from controlplane.health.inventory import Inventory
from controlplane.health.monitor import Monitor
from controlplane.health.targets import BackendTarget, target_of
from controlplane.publish.rows import RowCache, read_tables
from controlplane.sync.manager import Synchroniser
from controlplane.sync.plan import required_by_backend
from controlplane.tables import BackendRow, FrontendRow
from shared.bus import Bus
from shared.errors import BusError, SnapshotRejected
from shared.snapshot import decode

__all__ = ["Fleet"]

log = logging.getLogger("ollamaflow.controlplane.fleet")

# How long a requested reconcile waits: the publish of the same change runs first (it is what data
# planes wait for), and a burst of admin writes is read once.
SETTLE = 0.05


class Fleet:
    """The configuration-driven side of the monitor and the synchroniser."""

    def __init__(
        self, db: Database, bus: Bus, monitor: Monitor, sync: Synchroniser, *, interval: float
    ) -> None:
        self._db = db
        self._bus = bus
        self.monitor = monitor
        self.sync = sync
        self._interval = interval
        self._wake = asyncio.Event()
        self._backends = RowCache(BackendRow)
        self._frontends = RowCache(FrontendRow)
        self._targets: dict[str, tuple[BackendRow, BackendTarget]] = {}

    def request(self) -> None:
        """Read the configuration again soon."""
        self._wake.set()

    async def start(self, *, bus_wait: float = 3.0) -> None:
        """Seed health from the stored snapshot (if NATS answers within ``bus_wait``), then reconcile."""
        await self._seed(bus_wait)
        await self.reconcile()

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
                await asyncio.sleep(SETTLE)
            self._wake.clear()
            try:
                await self.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("cannot read the backends to monitor: %s; retrying", exc)
                await asyncio.sleep(1.0)
                self._wake.set()

    async def reconcile(self) -> None:
        async with self._db.session() as session:
            await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            backends, frontends = await read_tables(session, self._backends, self._frontends)
        targets = {row.identifier: self._target(row) for row in backends}
        for gone in self._targets.keys() - targets.keys():
            del self._targets[gone]
        self.monitor.apply(targets.values())
        self.sync.apply(required_by_backend(frontends), targets)

    def _target(self, row: BackendRow) -> BackendTarget:
        cached = self._targets.get(row.identifier)
        if cached is not None and cached[0] is row:  # the row cache hands back unchanged rows as they were
            return cached[1]
        target = target_of(row)
        self._targets[row.identifier] = (row, target)
        return target

    async def _seed(self, bus_wait: float) -> None:
        if not self.monitor.enabled:
            return
        for _ in range(max(1, round(bus_wait / 0.05))):  # the bus connects in a task of its own
            if self._bus.connected:
                break
            await asyncio.sleep(0.05)
        try:
            stored = (
                await asyncio.wait_for(self._bus.read_snapshot(), bus_wait) if self._bus.connected else None
            )
            snapshot = decode(stored[0]) if stored else None
        except (BusError, SnapshotRejected, TimeoutError) as exc:
            log.info("no health to take over from the stored snapshot: %s", exc)
            return
        if snapshot is not None:
            backends = snapshot.content.backends
            self.monitor.seed(
                {b.id: b.healthy for b in backends if b.health_checked},
                {
                    b.id: Inventory(known=True, models=b.models, loaded=b.models_loaded, dialect=b.dialect)
                    for b in backends
                    if b.models_known
                },
            )
