"""Where snapshot content comes from: every configuration row (one consistent read), live data planes
and what the monitor observed of each backend."""

from __future__ import annotations

from collections.abc import Callable

from sqlmodel import select

from controlplane.db import Database
from controlplane.publish.builder import BackendRuntime, build_content
from controlplane.reports import DataPlaneRegistry
from controlplane.tables import BackendRow, FrontendRow
from shared.snapshot import SnapshotContent

__all__ = ["ConfigSource"]


class ConfigSource:
    """Reads the rows and hands them to the pure builder."""

    def __init__(
        self,
        db: Database,
        registry: DataPlaneRegistry,
        runtime: Callable[[str], BackendRuntime] | None = None,
    ) -> None:
        self._db = db
        self._registry = registry
        self._runtime = runtime

    async def content(self) -> SnapshotContent:
        async with self._db.session() as session:
            # One REPEATABLE READ transaction: frontends and backends from the same moment, so a frontend
            # never names a backend the snapshot lacks.
            await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            frontends = (await session.exec(select(FrontendRow))).all()
            backends = (await session.exec(select(BackendRow))).all()
        return build_content(frontends, backends, self._registry.live_ids(), self._runtime)
