"""The data plane's answer to the control plane's routing dry-runs (``BusNames.explain_subject``).

The control plane asks one data plane of the ``dataplanes`` queue group; it answers from its current
routing table, its own requests in flight, its shares of the backends' limits and its circuit breakers
(``dataplane.routing.explain.dry_run``), without sending anything to a backend. A request it cannot read gets
a reply with status 400; it never raises back to the bus.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import msgspec

from dataplane.limits.breaker import Breakers
from dataplane.limits.traffic import Traffic
from dataplane.routing.explain import dry_run
from dataplane.routing.strategies import UNLIMITED
from dataplane.state import SnapshotState
from shared.bus import Bus
from shared.errors import BusError
from shared.wire.explain import ExplainReply, decode_request, encode

__all__ = ["Explainer"]

log = logging.getLogger("ollamaflow.dataplane.explain_bus")

QUEUE = "dataplanes"
# How often to look whether the bus is connected yet (the bus sync task connects it).
CONNECT_POLL = 0.2


class Explainer:
    def __init__(
        self,
        dataplane_id: str,
        state: SnapshotState,
        traffic: Traffic,
        breakers: Breakers,
        share_of: Callable[[str], int | None] | None = None,
    ) -> None:
        self._id = dataplane_id
        self._state = state
        self._traffic = traffic
        self._breakers = breakers
        self._share_of = share_of  # backend id -> this data plane's share of its limit, if assigned

    def limit_of(self, backend_id: str) -> int:
        """This data plane's share of the backend's MaxParallelRequests (the whole when unknown)."""
        share = self._share_of(backend_id) if self._share_of is not None else None
        if share is not None:
            return share
        backend = self._state.table.backends.get(backend_id)
        if backend is None:
            return 0
        return backend.max_parallel_requests or UNLIMITED

    async def handle(self, data: bytes) -> bytes:
        try:
            request = decode_request(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            reply = ExplainReply(
                dataplane=self._id, revision=self._state.revision, status=400, error=f"bad request: {exc}"
            )
            return encode(reply)
        reply = dry_run(
            self._state.table,
            request,
            dataplane=self._id,
            in_flight=self._traffic.in_flight,
            limit_of=self.limit_of,
            ejected=self._breakers.ejected(),
        )
        return encode(reply)

    async def run(self, bus: Bus) -> None:
        """Serve dry-runs once the bus is connected, until cancelled (NATS re-subscribes by itself
        after a reconnect)."""
        stop: Callable[[], Awaitable[None]] | None = None
        try:
            while stop is None:
                if bus.connected:
                    try:
                        stop = await bus.serve(bus.names.explain_subject, self.handle, queue=QUEUE)
                        log.info("answering routing dry-runs on %s", bus.names.explain_subject)
                        break
                    except BusError as exc:
                        log.warning("cannot answer routing dry-runs yet: %s", exc.message)
                await asyncio.sleep(CONNECT_POLL)
            await asyncio.Event().wait()  # until cancelled
        finally:
            if stop is not None:
                await stop()
