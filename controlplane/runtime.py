"""The composition root: every long-lived object of a control plane, built once, and its background work.

Start-up never blocks serving: ``/healthz`` answers at once while, in the background, the database is
waited for and migrated (then the publisher starts) and NATS is connected (then reports are
subscribed to). ``/readyz`` says 200 once all of that holds. Shutdown cancels the tasks and closes the
connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from controlplane.admin.apikey_service import ApiKeyService
from controlplane.admin.service import BackendService, FrontendService
from controlplane.apikey_usage import KeyUsageRecorder, source_of
from controlplane.clock import Clock
from controlplane.db import Database
from controlplane.fleet import Fleet
from controlplane.health.monitor import Monitor
from controlplane.migrate import upgrade
from controlplane.models_requests import ModelRequests
from controlplane.publish.publisher import Publisher
from controlplane.publish.source import ConfigSource
from controlplane.readiness import Readiness
from controlplane.reports import DataPlaneRegistry
from controlplane.settings import Settings
from controlplane.sync.manager import Synchroniser
from shared.bus import Bus, BusNames
from shared.bus_connect import BusLogin
from shared.errors import BusError
from shared.signing import SnapshotSigner
from shared.signing_keys import load_signer
from shared.tls import backend_ssl_context

__all__ = ["ControlPlane"]

log = logging.getLogger("ollamaflow.controlplane")

MIN_ADMIN_TOKEN_LENGTH = 24
_MIGRATE_RETRY_MAX = 5.0
_RETRY_LOG_GAP = 5.0


def _signer(settings: Settings) -> SnapshotSigner | None:
    """The key that signs published snapshots (ConfigError if the file is unusable)."""
    if settings.snapshot_signing_key_file is None:
        log.warning(
            "OLLAMAFLOW_SNAPSHOT_SIGNING_KEY_FILE is not set: snapshots are published unsigned, and data "
            "planes refuse them unless OLLAMAFLOW_ALLOW_UNSIGNED_SNAPSHOTS=true (make a key pair with "
            "`ollamaflow keys`)"
        )
        return None
    signer = load_signer(settings.snapshot_signing_key_file)
    log.info("snapshots are signed with key %s", signer.key_id)
    return signer


class ControlPlane:
    """One control-plane replica."""

    def __init__(self, settings: Settings, *, clock: Clock | None = None, migrate_retry: float = 1.0) -> None:
        self.settings = settings
        self.clock = clock or Clock()
        self._migrate_retry = migrate_retry
        self.db = Database(settings.database_url)
        names = BusNames(settings.bus_namespace)
        self.bus = Bus(
            settings.nats_url,
            names,
            client_name="ollamaflow-controlplane",
            login=BusLogin(
                user=settings.nats_user,
                password=settings.nats_password,
                ca_file=settings.nats_ca_file,
                cert_file=settings.nats_cert_file,
                key_file=settings.nats_key_file,
                inbox_prefix=names.inbox_prefix("controlplane"),
            ),
        )
        self.key_usage = KeyUsageRecorder(self.db, clock=self.clock, live_sources=self._live_sources)
        self.registry = DataPlaneRegistry(
            ttl=settings.dataplane_ttl,
            clock=self.clock,
            on_live_change=self._live_set_changed,
            on_ejected=self._ejected_by_dataplane,
            on_demand_change=self._live_set_changed,  # re-split the backends' limits and keys' rates
            on_report=self.key_usage.record,
        )
        self.monitor = Monitor(
            clock=self.clock,
            interval=settings.health_interval,
            timeout=settings.health_timeout,
            inventory_interval=settings.inventory_interval,
            on_change=self._backend_changed,
            enabled=settings.monitor_backends,
            urgent_gap=settings.ejected_probe_gap,
            ssl_context=backend_ssl_context(settings.backend_ca_file, settings.backend_tls_verify),
        )
        self.sync = Synchroniser(
            self.monitor,
            clock=self.clock,
            parallelism=settings.sync_parallelism,
            per_backend=settings.sync_parallelism_per_backend,
            max_attempts=settings.sync_max_attempts,
            retry_delay=settings.sync_retry_delay,
            remove_unrequired=settings.sync_remove_unrequired,
            enabled=settings.monitor_backends,
        )
        self.fleet = Fleet(self.db, self.bus, self.monitor, self.sync, interval=settings.publish_interval)
        self.publisher = Publisher(
            self.bus,
            content=ConfigSource(
                self.db, self.registry, self.monitor.runtime, bus=self.bus, admin_tokens=settings.admin_tokens
            ).content,
            next_revision=self.db.next_revision,
            clock=self.clock,
            interval=settings.publish_interval,
            signer=_signer(settings),
        )
        self.frontends = FrontendService(self.db, clock=self.clock, on_change=self._config_changed)
        self.backends = BackendService(self.db, clock=self.clock, on_change=self._config_changed)
        self.apikeys = ApiKeyService(self.db, clock=self.clock, on_change=self._config_changed)
        self.readiness = Readiness(self.db, self.bus)
        # Data planes' /api/pull, /api/delete, /api/copy; pull progress goes out on the bus.
        self.models = ModelRequests(self.bus, self.frontends, self.fleet, self.sync, self.monitor)
        self.sync.on_progress = self.models.progress
        for length in sorted({len(t) for t in settings.admin_tokens if len(t) < MIN_ADMIN_TOKEN_LENGTH}):
            # Their SHA-256 digests travel in every snapshot: a short token could be guessed from one.
            log.warning(
                "an admin token in OLLAMAFLOW_ADMIN_TOKENS has only %d characters; use at least %d "
                "random ones",
                length,
                MIN_ADMIN_TOKEN_LENGTH,
            )

    def _live_sources(self) -> set[str]:
        return {source_of(s.report) for s in self.registry.sightings() if self.registry.is_live(s)}

    def _config_changed(self) -> None:
        self.publisher.request(force=True)
        self.fleet.request()

    def _backend_changed(self) -> None:
        # Health or models changed: publish now (skipped if the content is unchanged) and re-plan pulls.
        self.publisher.request()
        self.sync.wake()

    def _live_set_changed(self) -> None:
        self.publisher.request()

    def _ejected_by_dataplane(self, backend: str) -> None:
        # A data plane's circuit breaker opened: let the probes confirm it now, not an interval later.
        if self.monitor.probe_now(backend):
            log.info("backend %s was ejected by a data plane: probing it now", backend)

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: object = None) -> AsyncIterator[None]:
        """Run the background work for as long as the app serves."""
        tasks = [
            _task(self._database_then_publish(), "database-and-publisher"),
            _task(self._bus_then_reports(), "bus-and-reports"),
            _task(self.registry.run_expiry(), "dataplane-expiry"),
            _task(self.models.run(), "model-requests"),
            _task(self.key_usage.run(), "apikey-usage"),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.sync.close()
            await self.monitor.close()
            await self.bus.close()
            await self.db.close()

    async def _database_then_publish(self) -> None:
        await self._migrate()
        try:
            await self.fleet.start()
        except Exception as exc:  # the database went away again: the fleet's loop retries
            log.warning("cannot read the backends to monitor yet: %s", exc)
            self.fleet.request()
        fleet = _task(self.fleet.run(), "fleet")
        self.publisher.request()
        try:
            await self.publisher.run()
        finally:
            fleet.cancel()

    async def _migrate(self) -> None:
        """Apply the migrations, waiting for the database as long as it takes (a warning at most every
        ``_RETRY_LOG_GAP`` seconds)."""
        delay = self._migrate_retry
        logged_at: float | None = None
        while True:
            try:
                await asyncio.to_thread(upgrade, self.settings.database_url)
            except Exception as exc:
                reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
                self.readiness.detail = f"waiting for the database: {reason}"
                now = self.clock.monotonic()
                if logged_at is None or now - logged_at >= _RETRY_LOG_GAP:
                    log.warning("cannot migrate the database yet (%s); retrying", reason)
                    logged_at = now
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MIGRATE_RETRY_MAX)
                continue
            self.readiness.schema_ready = True
            self.readiness.detail = ""
            log.info("database schema is at head")
            return

    async def _bus_then_reports(self) -> None:
        await self.bus.connect_forever()
        while True:
            try:
                await self.bus.subscribe_reports(self.registry.handle)
                break
            except BusError as exc:  # the connection dropped right away; nats-py is reconnecting
                log.warning("%s; retrying", exc)
                await asyncio.sleep(1.0)
        log.info("connected to NATS; listening for data-plane reports")
        self.publisher.request()


def _task(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
    task = asyncio.create_task(coro, name=f"ollamaflow-controlplane-{name}")
    task.add_done_callback(_log_crash)
    return task


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background task %s stopped", task.get_name(), exc_info=task.exception())
