"""The composition root: every long-lived object of a control plane, built once, and its background work.

Start-up never blocks serving: ``/healthz`` answers at once while, in the background, the database is
waited for and migrated (then the replica campaigns for the lease) and NATS is connected (then reports
are subscribed to). ``/readyz`` says 200 once all of that holds. Every replica serves the admin API
and hears the data planes' reports; the one holding the lease (``controlplane.lease``) also probes,
syncs models, publishes and answers model requests (``controlplane.leader_work``), and stops all of
that the moment it loses the lease. Shutdown stops the work, releases the lease (another replica
takes over at once) and closes the connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from msgspec.json import encode

from controlplane.admin.apikey_service import ApiKeyService
from controlplane.admin.crud import Cap
from controlplane.admin.service import BackendService, FrontendService
from controlplane.apikey_usage import KeyUsageRecorder, source_of
from controlplane.clock import Clock
from controlplane.db import Database
from controlplane.health.monitor import Monitor
from controlplane.leader_work import ChangeNotice, LeaderObserver, LeaderWork, cancel_and_wait
from controlplane.lease import Lease
from controlplane.migrate import upgrade
from controlplane.models_requests import ModelRequests
from controlplane.publish.publisher import Publisher, PublishStatus
from controlplane.readiness import Readiness
from controlplane.reports import DataPlaneRegistry
from controlplane.sealed_columns import StoredSecretsLocked, seal_stored_secrets, use_keyring
from controlplane.settings import Settings
from controlplane.sync.manager import Synchroniser
from shared.bus import Bus, BusNames
from shared.bus_connect import BusLogin
from shared.errors import BusError
from shared.logs import KnownSecrets
from shared.signing import SnapshotSigner
from shared.signing_keys import load_signer

__all__ = ["ControlPlane"]

log = logging.getLogger("ollamaflow.controlplane")

MIN_ADMIN_TOKEN_LENGTH = 24
_MIGRATE_RETRY_MAX = 5.0
_RETRY_LOG_GAP = 5.0
_WORK_RESTART_DELAY = 1.0


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
        use_keyring(settings.secrets)  # backend secrets are stored sealed with it (sealed_columns)
        self.clock = clock or Clock()
        self._migrate_retry = migrate_retry
        self.replica = settings.replica_id or f"{socket.gethostname()}-{settings.port}"
        self.db = Database(settings.database_url)
        self.signer = _signer(settings)  # checked and announced once, at start
        # Backend secret values, kept out of log lines (``shared.logs``); the config source refreshes it.
        self.known_secrets = KnownSecrets()
        names = BusNames(settings.bus_namespace)
        self.bus = Bus(
            settings.nats_url,
            names,
            client_name="ollamaflow-controlplane",
            login=BusLogin.of(settings, inbox_prefix=names.inbox_prefix("controlplane")),
        )
        self.lease = Lease(
            self.bus,
            holder=self.replica,
            address=settings.advertise_url or _admin_url(settings.host, settings.port),
            ttl=settings.lease_ttl,
            renew_every=settings.lease_renew,
            clock=self.clock,
            publish_status=self._own_publish_status,
        )
        self.key_usage = KeyUsageRecorder(self.db, clock=self.clock, live_sources=self._live_sources)
        # Every replica hears every report: /v1.0/dataplanes answers on each, and a new leader knows
        # the live data planes and their demand from its first snapshot on.
        self.registry = DataPlaneRegistry(
            ttl=settings.dataplane_ttl,
            clock=self.clock,
            on_live_change=self._live_set_changed,
            on_ejected=self._ejected_by_dataplane,
            on_demand_change=self._live_set_changed,  # re-split the backends' limits and keys' rates
            on_report=self.key_usage.record,
        )
        self.frontends = FrontendService(
            self.db, clock=self.clock, on_change=self._config_changed, cap=Cap.of(settings, "max_frontends")
        )
        self.backends = BackendService(
            self.db,
            clock=self.clock,
            on_change=self._config_changed,
            cap=Cap.of(settings, "max_backends"),
            can_seal=bool(settings.secrets),
        )
        self.apikeys = ApiKeyService(
            self.db, clock=self.clock, on_change=self._config_changed, cap=Cap.of(settings, "max_apikeys")
        )
        self.readiness = Readiness(self.db, self.bus, publish_error=lambda: self.publish_status.last_error)
        self.work: LeaderWork | None = None
        """What this replica does while it holds the lease; None while it does not."""
        self.observer: LeaderObserver | None = None
        """Told of the probes, pull attempts and publish rounds of every term this replica leads (the
        metrics, ``controlplane.metrics``)."""
        self._notices: set[asyncio.Task[None]] = set()
        self._leading: asyncio.Task[None] | None = None
        self._resigning: asyncio.Future[None] | None = None
        for length in sorted({len(t) for t in settings.admin_tokens if len(t) < MIN_ADMIN_TOKEN_LENGTH}):
            # Their SHA-256 digests travel in every snapshot: a short token could be guessed from one.
            log.warning(
                "an admin token in OLLAMAFLOW_ADMIN_TOKENS has only %d characters; use at least %d "
                "random ones",
                length,
                MIN_ADMIN_TOKEN_LENGTH,
            )

    # The leader's parts, for the admin views and tests; None on a replica that does not lead.

    @property
    def monitor(self) -> Monitor | None:
        return self.work.monitor if self.work is not None else None

    @property
    def sync(self) -> Synchroniser | None:
        return self.work.sync if self.work is not None else None

    @property
    def publisher(self) -> Publisher | None:
        return self.work.publisher if self.work is not None else None

    @property
    def models(self) -> ModelRequests | None:
        return self.work.models if self.work is not None else None

    @property
    def publish_status(self) -> PublishStatus:
        """How publishing goes: this replica's publisher while it leads, else what the leader last
        wrote into the lease (at most a renewal old)."""
        if (publisher := self.publisher) is not None:
            return PublishStatus(revision=publisher.revision, last_error=publisher.last_error)
        leader = self.lease.leader
        if leader is None:
            return PublishStatus()
        return PublishStatus(revision=leader.published_revision, last_error=leader.publish_error)

    def _own_publish_status(self) -> tuple[int, str]:
        publisher = self.publisher
        return (publisher.revision, publisher.last_error) if publisher is not None else (0, "")

    def _live_sources(self) -> set[str]:
        return {source_of(s.report) for s in self.registry.sightings() if self.registry.is_live(s)}

    def _config_changed(self) -> None:
        if self.work is not None:
            self.work.config_changed()
        # Whoever leads publishes it now (the leader ignores its own notices).
        task = asyncio.create_task(self._announce_change(), name="ollamaflow-controlplane-change-notice")
        self._notices.add(task)
        task.add_done_callback(self._notices.discard)

    async def _announce_change(self) -> None:
        try:
            await self.bus.publish(self.bus.names.changes_subject, encode(ChangeNotice(replica=self.replica)))
        except BusError as exc:  # the leader's periodic publish (OLLAMAFLOW_PUBLISH_INTERVAL) catches up
            log.warning("cannot tell the leading control plane about a change: %s", exc)

    def _live_set_changed(self) -> None:
        if self.work is not None:
            self.work.publisher.request()

    def _ejected_by_dataplane(self, backend: str) -> None:
        if self.work is not None:
            self.work.ejected(backend)

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: object = None) -> AsyncIterator[None]:
        """Run the background work for as long as the app serves."""
        self._leading = _task(self._database_then_lead(), "database-and-lease")
        tasks = [
            _task(self._bus_then_reports(), "bus-and-reports"),
            _task(self.registry.run_expiry(), "dataplane-expiry"),
            _task(self.key_usage.run(), "apikey-usage"),
        ]
        try:
            yield
        finally:
            await self.resign()  # the leader's work stops and another replica may take over
            await cancel_and_wait([*tasks, *self._notices])
            await self.bus.close()
            await self.db.close()

    async def resign(self) -> None:
        """Stop leading for good and release the lease (on SIGTERM at once, before open connections
        such as pull streams have ended and the app shuts down): another replica takes over at once.
        Safe to call more than once, and concurrently."""
        if self._resigning is None:
            self._resigning = asyncio.ensure_future(self._resign())
        await asyncio.shield(self._resigning)

    async def _resign(self) -> None:
        if self._leading is not None:
            # Cancelled once: it then stops the leader's work and waits for it (``_lead``).
            self._leading.cancel()
            await asyncio.wait({self._leading})
        await self.lease.release()

    async def _database_then_lead(self) -> None:
        await self._migrate()
        campaign = _task(self.lease.run(), "lease")
        try:
            while True:
                await self.lease.leading.wait()
                await self._lead()
        finally:
            await cancel_and_wait([campaign])

    async def _lead(self) -> None:
        """Do the leader's work until the lease is lost (or the replica stops); work that fails is
        started afresh, so that a leader never holds the lease while doing nothing."""
        while self.lease.is_leader:
            work = LeaderWork(
                self.settings,
                replica=self.replica,
                db=self.db,
                bus=self.bus,
                registry=self.registry,
                frontends=self.frontends,
                clock=self.clock,
                known_secrets=self.known_secrets,
                observer=self.observer,
                signer=self.signer,
            )
            self.work = work
            running = _task(work.run(), "leader-work")
            deposed = asyncio.create_task(self.lease.following.wait())
            try:
                await asyncio.wait({running, deposed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                self.work = None
                # Once each: the work's own clean-up cancels its parts until they have ended.
                running.cancel()
                deposed.cancel()
                await asyncio.wait({running, deposed})
                await work.close()
            if deposed.cancelled():
                await asyncio.sleep(_WORK_RESTART_DELAY)  # it failed (and was logged): start again

    async def _migrate(self) -> None:
        """Apply the migrations and seal stored secrets (``controlplane.sealed_columns``), waiting for
        the database as long as it takes (a warning at most every ``_RETRY_LOG_GAP`` seconds)."""
        delay = self._migrate_retry
        logged_at: float | None = None
        while True:
            try:
                await asyncio.to_thread(upgrade, self.settings.database_url)
                await seal_stored_secrets(self.db.engine)
            except StoredSecretsLocked as exc:
                # It must neither serve nor publish a configuration it cannot read whole: it stays
                # "starting", saying why, until it is given the key (a restart).
                self.readiness.detail = str(exc)
                log.error("cannot start: %s", exc)
                await asyncio.Event().wait()
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
        if self.work is not None:
            self.work.publisher.request()


def _admin_url(host: str, port: int) -> str:
    if host in ("0.0.0.0", "::", ""):  # listening everywhere: the host name is how others reach it
        host = socket.gethostname()
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _task(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
    task = asyncio.create_task(coro, name=f"ollamaflow-controlplane-{name}")
    task.add_done_callback(_log_crash)
    return task


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background task %s stopped", task.get_name(), exc_info=task.exception())
