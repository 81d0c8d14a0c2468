"""Is the control plane ready? The schema must be migrated, Postgres must answer, NATS be connected and
the last snapshot publish must have worked (a control plane whose writes stop reaching the data planes
is not ready, whatever else answers)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.types import Guard

from controlplane.db import Database
from controlplane.errors import ApiError
from shared.bus import Bus

__all__ = ["Readiness"]


@dataclass(slots=True)
class Readiness:
    """Start-up progress and a live check, for ``/readyz`` and for routes that need the database."""

    db: Database
    bus: Bus
    schema_ready: bool = False
    detail: str = "migrating the database"
    ping_timeout: float = 2.0
    publish_error: Callable[[], str] = lambda: ""
    """Why the last snapshot publish failed ("" after a success)."""

    async def check(self) -> tuple[str, str]:
        """``("ok", "")``, ``("starting", why)`` before the schema is ready, or ``("unavailable", why)``."""
        if not self.schema_ready:
            return "starting", self.detail
        try:
            await asyncio.wait_for(self.db.ping(), timeout=self.ping_timeout)
        except Exception as exc:
            return "unavailable", f"the database does not answer ({type(exc).__name__})"
        if not self.bus.connected:
            return "unavailable", "waiting for NATS: not connected"
        if error := self.publish_error():
            return "unavailable", f"the snapshot cannot be published: {error}"
        return "ok", ""

    def guard(self) -> Guard:
        """A guard for routes over the configuration tables: 503 until the schema is migrated."""

        # A closure, not a bound method: Litestar deep-copies routers, and with them their guards.
        def schema_ready(_connection: ASGIConnection, _handler: BaseRouteHandler) -> None:
            if not self.schema_ready:
                raise ApiError("ServiceUnavailable", f"the control plane is starting: {self.detail}")

        return schema_ready
