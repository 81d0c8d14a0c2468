"""The data plane's side of the bus: follow the snapshot key and publish reports.

Nothing here is on the request path. NATS may be down at start or go away later: the data plane keeps
serving on its last good snapshot meanwhile. Three loops run once connected:

- the KV watch, for changes within milliseconds; restarted whenever it breaks or the connection dropped
  (a watch started before a NATS restart can go silent rather than fail). Just before it stores a
  snapshot, the control plane sends it as a delta of the one before (``shared.snapshot_delta``),
  which this plane applies if it holds that one: the whole snapshot that follows is then known at a
  glance;
- a periodic re-read of the key, the safety net that converges even if a watch misses something (a
  snapshot stored in pieces is fetched again only when its manifest changed);
- the report, every ``report_interval`` seconds, at once after a new snapshot was applied (the control
  plane and ``ollamaflow bench --scenario propagation`` learn within milliseconds that it landed), and
  at once when the drain begins (``report_now``), so that the control plane hands this plane's limit
  shares to the others without waiting. When the
  sync stops after a drain, a last report says ``stopped``: the control plane drops this plane at once.

It also listens to the other data planes' reports: admission raises this plane's share of a backend
only once the others have reported that they applied the same snapshot and what they still run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import msgspec

from dataplane.drain import Drain
from dataplane.limits.access import Access
from dataplane.limits.admission import Admission
from dataplane.limits.breaker import Breakers
from dataplane.limits.traffic import Traffic
from dataplane.state import SnapshotState
from shared.bus import Bus
from shared.errors import BusError, SnapshotRejected
from shared.pieces import names_held
from shared.wire.reports import DataPlaneReport, decode_report, encode_report

__all__ = ["BusSync", "ReportIdentity"]

log = logging.getLogger("ollamaflow.dataplane.follower")


@dataclass(frozen=True, slots=True)
class ReportIdentity:
    """The unchanging part of every report."""

    id: str
    address: str
    started_at: str
    version: str = ""
    start_id: str = ""  # random per process start: the key usage counters restart under a new one


class BusSync:
    def __init__(
        self,
        bus: Bus,
        state: SnapshotState,
        traffic: Traffic,
        identity: ReportIdentity,
        *,
        breakers: Breakers | None = None,
        admission: Admission | None = None,
        access: Access | None = None,
        poll_interval: float,
        report_interval: float,
        drain: Drain | None = None,
    ) -> None:
        self._bus = bus
        self._state = state
        self._traffic = traffic
        self._breakers = breakers
        self._admission = admission
        self._access = access
        self._identity = identity
        self._poll_interval = poll_interval
        self._report_interval = report_interval
        self._drain = drain
        self._report_wanted = asyncio.Event()
        self._watch_task: asyncio.Task[None] | None = None
        self._last_head = b""  # what the re-read last found under the snapshot key
        self._hearing_deltas = False  # subscribed to the deltas (once: nats-py keeps it over reconnects)
        state.listeners.append(lambda _snapshot: self.report_now())

    async def _subscribe(self) -> None:
        while True:  # nats-py resubscribes on reconnects; this only retries a drop right at the start
            try:
                if not self._hearing_deltas:
                    await self._bus.subscribe(self._bus.names.snapshot_delta_subject, self._on_delta)
                    self._hearing_deltas = True
                if self._admission is not None:
                    await self._bus.subscribe_reports(self._on_report)
                return
            except BusError as exc:
                log.warning("%s; retrying", exc)
                await asyncio.sleep(min(1.0, self._poll_interval))

    async def _on_delta(self, data: bytes) -> None:
        try:
            self._state.apply_delta(data)
        except Exception:  # the whole snapshot follows on the watch
            log.exception("snapshot delta failed")

    async def run(self) -> None:
        """Connect (retrying forever), then follow and report until cancelled."""
        try:
            await self._bus.connect_forever(retry_every=min(1.0, self._poll_interval))
            log.info("connected to NATS at %s", self._bus.url)
            await self._subscribe()
            async with asyncio.TaskGroup() as group:
                group.create_task(self._poll_loop())
                group.create_task(self._report_loop())
        finally:
            if self._watch_task is not None:
                self._watch_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._watch_task
            await self._farewell()
            await self._bus.close()  # sends what is still buffered, the last report included

    async def _farewell(self) -> None:
        """After a drain: the last report, saying this data plane stopped."""
        if self._drain is None or not self._drain.draining or not self._bus.connected:
            return
        last = msgspec.structs.replace(self.report(), stopped=True)
        try:
            async with asyncio.timeout(1.0):
                await self._bus.publish_report(encode_report(last))
        except (BusError, TimeoutError) as exc:
            log.debug("last report not sent: %s", exc)

    def report_now(self) -> None:
        """Send a report without waiting for the interval (the report loop, once connected)."""
        self._report_wanted.set()

    async def _watch(self) -> None:
        try:
            async for data in self._bus.watch_snapshot(held=self._holds):
                self._state.apply(data, source="watch")
        except BusError as exc:
            log.info("snapshot watch stopped: %s", exc.message)
        except Exception:  # the next poll starts a new watch; the re-read covers the gap
            log.exception("snapshot watch failed")

    def _holds(self, revision: int, content_hash: str) -> bool:
        """Whether a snapshot stored in pieces needs no fetch: it is the applied one (a delta brought
        it), or an older one (a re-read that started before the watch brought a newer one; fetching
        megabytes only to refuse them as older would also report a refusal for a mere race)."""
        applied = self._state.snapshot
        if applied is None:
            return False
        return revision < applied.revision or (applied.revision, applied.content_hash) == (
            revision,
            content_hash,
        )

    def _ensure_watch(self, *, restart: bool) -> None:
        if restart and self._watch_task is not None:
            self._watch_task.cancel()
            self._watch_task = None
        if self._watch_task is None or self._watch_task.done():
            self._watch_task = asyncio.create_task(self._watch(), name="snapshot-watch")

    async def _poll_loop(self) -> None:
        was_connected = True
        seen_reconnects = self._bus.reconnects
        while True:
            connected = self._bus.connected
            if was_connected and not connected:
                log.warning("lost NATS; serving on snapshot revision %d meanwhile", self._state.revision)
            if connected:
                # A connection that came back needs a new watch: the old consumer may be gone. The
                # reconnect count also catches a NATS restart quicker than this loop's interval.
                reconnects = self._bus.reconnects
                back = not was_connected or reconnects != seen_reconnects
                if back:
                    log.info("NATS is back; following the snapshot again")
                seen_reconnects = reconnects
                self._ensure_watch(restart=back)
                await self._reread()
            was_connected = connected
            await asyncio.sleep(self._poll_interval)

    async def _reread(self) -> None:
        try:
            stored = await self._bus.read_snapshot_head()
            if stored is None or stored[0] == self._last_head:
                return
            if names_held(stored[0], self._holds):
                self._last_head = stored[0]
                return
            data = await self._bus.expand_snapshot(stored[0])
        except BusError as exc:
            log.debug("snapshot re-read failed: %s", exc.message)
            return
        except SnapshotRejected as exc:
            self._state.reject(exc.message, source="re-read")
            return
        except Exception:  # never let a surprise end the safety net
            log.exception("snapshot re-read failed")
            return
        self._last_head = stored[0]
        self._state.apply(data, source="re-read")

    async def _on_report(self, data: bytes) -> None:
        try:
            report = decode_report(data)
        except msgspec.DecodeError:  # a newer or broken peer: its report is no use for admission
            return
        if self._admission is not None and report.id != self._identity.id:
            self._admission.observe(report)

    def report(self) -> DataPlaneReport:
        identity = self._identity
        return DataPlaneReport(
            id=identity.id,
            applied_revision=self._state.revision,
            snapshot_error=self._state.error,
            address=identity.address,
            version=identity.version,
            in_flight=self._traffic.in_flight_by_backend(),
            requests_total=self._traffic.requests_total,
            started_at=identity.started_at,
            ejected=self._ejected(),
            queued=self._admission.queued() if self._admission is not None else {},
            rejected_total=self._traffic.rejected_total,
            start_id=identity.start_id,
            key_usage=self._access.usage() if self._access is not None else {},
            client_errors=dict(self._traffic.client_errors),
            draining=self._drain is not None and self._drain.draining,
        )

    def _ejected(self) -> dict[str, str]:
        """Ejected backends that are still in the snapshot (a removed one is nobody's concern)."""
        snapshot = self._state.snapshot
        if self._breakers is None or snapshot is None:
            return {}
        ejected = self._breakers.ejected()
        if not ejected:
            return ejected
        current = {backend.id for backend in snapshot.content.backends}
        return {backend: reason for backend, reason in ejected.items() if backend in current}

    async def _report_loop(self) -> None:
        wanted = self._report_wanted
        while True:
            wanted.clear()
            try:
                await self._bus.publish_report(encode_report(self.report()))
            except BusError as exc:
                log.debug("report not sent: %s", exc.message)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._report_interval):
                    await wanted.wait()
