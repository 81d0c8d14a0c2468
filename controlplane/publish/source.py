"""Where snapshot content comes from: every configuration row (one consistent read), live data planes
with their demand, and what the monitor observed of each backend.

The limit shares of the stored snapshot are handed to the builder as the previous split, so that
small load changes keep them (no new revision) and racing replicas settle on the same shares.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlmodel import select

from controlplane.db import Database
from controlplane.publish.builder import BackendRuntime, build_content, shares_of
from controlplane.reports import DataPlaneRegistry
from controlplane.tables import BackendRow, FrontendRow
from shared.bus import Bus
from shared.errors import BusError, SnapshotRejected
from shared.snapshot import BackendShare, SnapshotContent, decode

__all__ = ["ConfigSource"]

log = logging.getLogger("ollamaflow.controlplane.publisher")


class ConfigSource:
    """Reads the rows and hands them to the pure builder."""

    def __init__(
        self,
        db: Database,
        registry: DataPlaneRegistry,
        runtime: Callable[[str], BackendRuntime] | None = None,
        *,
        bus: Bus | None = None,
    ) -> None:
        self._db = db
        self._registry = registry
        self._runtime = runtime
        self._bus = bus

    async def content(self) -> SnapshotContent:
        previous = await self._stored_shares()
        async with self._db.session() as session:
            # One REPEATABLE READ transaction: frontends and backends from the same moment, so a frontend
            # never names a backend the snapshot lacks.
            await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            frontends = (await session.exec(select(FrontendRow))).all()
            backends = (await session.exec(select(BackendRow))).all()
        demand = self._registry.demand()
        return build_content(
            frontends,
            backends,
            self._registry.live_ids(),
            self._runtime,
            demand=demand,
            previous_shares=previous,
        )

    async def _stored_shares(self) -> dict[str, dict[str, BackendShare]] | None:
        """The shares in the snapshot on the bus; None when there is none or it cannot be read."""
        if self._bus is None:
            return None
        try:
            stored = await self._bus.read_snapshot()
            return shares_of(decode(stored[0]).content) if stored else None
        except (BusError, SnapshotRejected) as exc:
            log.debug("no previous shares to keep: %s", exc)
            return None
