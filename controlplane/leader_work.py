"""The work only the leading control-plane replica does, built afresh each time it gains the lease.

A ``LeaderWork`` holds the backend monitor, the model synchroniser, the fleet (which keeps both in
step with the configuration), the snapshot publisher and the model-request server for one term of
leadership. ``run`` does all of it until cancelled (the lease was lost or the replica stops); then
``close`` stops every probe and pull. Nothing of it outlives the term: the next term starts from
the health the last snapshot carries (``Fleet.start``), as a restarted control plane does.

While it leads it also listens to ``BusNames.changes_subject``: another replica that committed an
admin change says so there, and it is published at once, as a change made here is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any, Protocol

import msgspec

from controlplane.admin.service import FrontendService
from controlplane.clock import Clock
from controlplane.db import Database
from controlplane.fleet import Fleet
from controlplane.health.monitor import Monitor, ProbeObserver
from controlplane.models_requests import ModelRequests
from controlplane.publish.publisher import Publisher, PublishObserver
from controlplane.publish.source import ConfigSource
from controlplane.reports import DataPlaneRegistry
from controlplane.settings import Settings
from controlplane.sync.manager import PullObserver, Synchroniser
from shared.bus import Bus
from shared.errors import BusError
from shared.logs import KnownSecrets
from shared.signing import SnapshotSigner
from shared.tls import backend_ssl_context

__all__ = ["ChangeNotice", "LeaderObserver", "LeaderWork", "cancel_and_wait"]

log = logging.getLogger("ollamaflow.controlplane")


class ChangeNotice(msgspec.Struct, kw_only=True):
    """Sent on ``changes_subject`` after an admin change was committed."""

    replica: str


class LeaderObserver(ProbeObserver, PullObserver, PublishObserver, Protocol):
    """Told of a term's probes, pull attempts and publish rounds (the metrics)."""


class LeaderWork:
    """Probing, syncing, publishing and answering model requests, for one term of leadership."""

    def __init__(
        self,
        settings: Settings,
        *,
        replica: str,
        db: Database,
        bus: Bus,
        registry: DataPlaneRegistry,
        frontends: FrontendService,
        clock: Clock,
        known_secrets: KnownSecrets | None = None,
        observer: LeaderObserver | None = None,
        signer: SnapshotSigner | None = None,
    ) -> None:
        self._replica = replica
        self._bus = bus
        self.monitor = Monitor(
            clock=clock,
            interval=settings.health_interval,
            timeout=settings.health_timeout,
            inventory_interval=settings.inventory_interval,
            on_change=self.backend_changed,
            enabled=settings.monitor_backends,
            urgent_gap=settings.ejected_probe_gap,
            ssl_context=backend_ssl_context(settings.backend_ca_file, settings.backend_tls_verify),
        )
        self.sync = Synchroniser(
            self.monitor,
            clock=clock,
            parallelism=settings.sync_parallelism,
            per_backend=settings.sync_parallelism_per_backend,
            max_attempts=settings.sync_max_attempts,
            retry_delay=settings.sync_retry_delay,
            remove_unrequired=settings.sync_remove_unrequired,
            enabled=settings.monitor_backends,
        )
        self.fleet = Fleet(db, bus, self.monitor, self.sync, interval=settings.publish_interval)
        self.publisher = Publisher(
            bus,
            content=ConfigSource(
                db,
                registry,
                self.monitor.runtime,
                bus=bus,
                admin_tokens=settings.admin_tokens,
                secrets_key=settings.secrets.current,
                known_secrets=known_secrets,
            ).content,
            next_revision=db.next_revision,
            clock=clock,
            interval=settings.publish_interval,
            signer=signer,
            freeze=True,
        )
        # Data planes' /api/pull, /api/delete, /api/copy; pull progress goes out on the bus.
        self.models = ModelRequests(bus, frontends, self.fleet, self.sync, self.monitor)
        self.sync.on_progress = self.models.progress
        self.observe(observer)

    def observe(self, observer: LeaderObserver | None) -> None:
        """Tell ``observer`` of this term's probes, pull attempts and publish rounds."""
        self.monitor.observer = self.sync.observer = self.publisher.observer = observer

    def config_changed(self) -> None:
        self.publisher.request(force=True)
        self.fleet.request()

    def backend_changed(self) -> None:
        # Health or models changed: publish now (skipped if the content is unchanged) and re-plan pulls.
        self.publisher.request()
        self.sync.wake()

    def ejected(self, backend: str) -> None:
        # A data plane's circuit breaker opened: let the probes confirm it now, not an interval later.
        if self.monitor.probe_now(backend):
            log.info("backend %s was ejected by a data plane: probing it now", backend)

    async def run(self) -> None:
        """Lead until cancelled; raises if a part of the work fails (the runtime starts afresh)."""
        try:
            await self.fleet.start()
        except Exception as exc:  # the database went away again: the fleet's loop retries
            log.warning("cannot read the backends to monitor yet: %s", exc)
            self.fleet.request()
        parts = [
            asyncio.create_task(self.fleet.run(), name="ollamaflow-controlplane-fleet"),
            asyncio.create_task(self.models.run(), name="ollamaflow-controlplane-model-requests"),
            asyncio.create_task(self._hear_changes(), name="ollamaflow-controlplane-changes"),
            asyncio.create_task(self.publisher.run(), name="ollamaflow-controlplane-publisher"),
        ]
        self.publisher.request()
        try:
            done, _ = await asyncio.wait(parts, return_when=asyncio.FIRST_COMPLETED)
            for part in done:  # each runs until cancelled: one that ended failed
                part.result()
                raise RuntimeError(f"{part.get_name()} ended")
        finally:
            await cancel_and_wait(parts)

    async def close(self) -> None:
        await self.sync.close()
        await self.monitor.close()

    async def _hear_changes(self, *, retry_every: float = 0.1) -> None:
        async def heard(data: bytes) -> None:
            try:
                notice = msgspec.json.decode(data, type=ChangeNotice)
            except (msgspec.DecodeError, msgspec.ValidationError):
                notice = ChangeNotice(replica="")
            if notice.replica != self._replica:  # our own changes were published already
                self.config_changed()

        while True:
            try:
                stop = await self._bus.subscribe(self._bus.names.changes_subject, heard)
                break
            except BusError:  # not connected (yet): the lease says we lead, so it will be
                await asyncio.sleep(retry_every)
        # What another replica committed while no one listened (e.g. during a takeover) is published
        # by this start's publish (content differs from the stored snapshot's).
        self.fleet.request()
        try:
            await asyncio.Event().wait()
        finally:
            with contextlib.suppress(Exception):
                await stop()


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]], *, every: float = 0.1) -> None:
    """Cancel ``tasks`` and wait until every one has ended. In Python 3.11 a cancellation that races
    a finishing ``wait_for`` (nats-py has them) can be lost, leaving the task running: such a task
    is cancelled again every ``every`` seconds."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=every)
