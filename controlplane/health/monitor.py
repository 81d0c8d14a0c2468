"""The backend monitor: one task per active backend that probes its health and reads its models.

Each backend has its own task (a probe loop and an inventory loop), so a slow or hanging backend only
ever delays itself. Probes and model-list reads go over the backend's own kept-alive connections
through a lean HTTP/1.1 client (``controlplane.health.probe_client``), each backend's probes at a phase
of its own within the interval (``controlplane.health.schedule``); model pulls and management calls
share one ``httpx.AsyncClient``. Both verify https backends by the shared TLS policy (``shared.tls``)
and reach backends directly, whatever proxy the environment names. ``apply``
reconciles the tasks with the configuration: new backends are probed at once, a backend whose address
or probe request changes starts over (its health is unknown again), one whose interval or timeout
changes is re-scheduled (its health is kept), deleted or inactive backends stop being probed. Every
change of health or models calls ``on_change`` (the publisher's trigger).

``probe_now`` is the passive side's way in: when a data plane ejects a backend, its probe loop wakes
at once instead of waiting out the interval, and while the failure is not yet confirmed (the backend
still counts as healthy after a failed probe) it probes again after ``urgent_gap`` rather than the
interval. Wake-ups are at most one per ``urgent_gap`` per backend, however many reports name it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

import httpx

from controlplane.clock import Clock
from controlplane.health.inventory import (
    MAX_INVENTORY_BYTES,
    Inventory,
    cap_loaded,
    cap_models,
    parse_loaded,
    parse_openai_listing,
    parse_tags,
)
from controlplane.health.probe_client import BodyTooLarge, ProbeClient, ProbeError, ProbeTimeout
from controlplane.health.schedule import next_probe
from controlplane.health.state import Health
from controlplane.health.targets import BackendTarget
from controlplane.publish.builder import UNPROBED, BackendRuntime
from shared.tls import backend_ssl_context

__all__ = ["REQUEST_ERRORS", "Monitor", "ProbeObserver", "describe_error"]

log = logging.getLogger("ollamaflow.controlplane.health")


# What a request to a backend can fail with: transport errors, and a URL or header (as configured)
# that httpx cannot send, e.g. a non-ASCII header value. Either way the backend cannot be reached.
REQUEST_ERRORS = (httpx.HTTPError, httpx.InvalidURL, UnicodeError)
# The same for the lean client of probes and listings (ValueError: a header with a line break).
_PROBE_ERRORS = (ProbeError, UnicodeError, ValueError)
# A probe needs only the status: a longer body is not read (the connection is dropped instead).
_PROBE_BODY = 64 * 1024


def describe_error(exc: BaseException) -> str:
    """A short, readable reason for a failed request to a backend."""
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    if isinstance(exc, ProbeTimeout):
        return f"timed out ({exc})"
    if isinstance(exc, ProbeError):
        return str(exc)
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect: {exc}" if str(exc) else "cannot connect"
    if isinstance(exc, UnicodeError):
        return f"a header or the URL cannot be sent: {exc}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class ProbeObserver(Protocol):
    """Told of each probe and each change of health (the metrics, ``controlplane.metrics``)."""

    def probed(self, backend: str, ok: bool, seconds: float) -> None: ...

    def transitioned(self, backend: str, healthy: bool) -> None: ...


class Monitor:
    """Health and model inventory of every backend, as this replica observes them."""

    def __init__(
        self,
        *,
        clock: Clock,
        interval: float,
        timeout: float,
        inventory_interval: float,
        on_change: Callable[[], None],
        enabled: bool = True,
        urgent_gap: float = 1.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.enabled = enabled
        self._urgent_gap = urgent_gap
        self._clock = clock
        self._interval = interval
        self._timeout = timeout
        self._inventory_interval = inventory_interval
        self._on_change = on_change
        self.targets: dict[str, BackendTarget] = {}
        self.health: dict[str, Health] = {}
        self.inventory: dict[str, Inventory] = {}
        # What runtime() last returned for each backend, kept until its health or models change: a
        # publish asks for all of them, and the same object lets the builder keep its view by identity.
        self._runtimes: dict[str, BackendRuntime] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._refresh: dict[str, asyncio.Event] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._last_wake: dict[str, float] = {}
        self._suspect: set[str] = set()
        self._seed: dict[str, bool] = {}
        self._seed_inventory: dict[str, Inventory] = {}
        self.observer: ProbeObserver | None = None
        # One TLS context for every client (building one per client would reload the CA store).
        self._verify: ssl.SSLContext = ssl_context if ssl_context is not None else backend_ssl_context()
        self.client = self._new_client(httpx.Limits(max_connections=None, max_keepalive_connections=200))

    def _new_client(self, limits: httpx.Limits) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=self._timeout,
            limits=limits,
            verify=self._verify,
            trust_env=False,  # backends are reached directly: HTTP(S)_PROXY and friends are not read
        )

    # -- configuration -----------------------------------------------------------------------------

    def seed(self, healthy: Mapping[str, bool], inventory: Mapping[str, Inventory] | None = None) -> None:
        """Health (and model lists) carried over from the last published snapshot, used for backends
        not yet applied: a restarted or newly leading control plane publishes what was known until
        its own probes and reads say otherwise."""
        self._seed = dict(healthy)
        self._seed_inventory = dict(inventory or {})

    def apply(self, targets: Iterable[BackendTarget]) -> None:
        """Make the probing match the configuration."""
        wanted = {t.id: t for t in targets}
        changed = False
        for gone in [i for i in self.targets if i not in wanted]:
            self._stop(gone)
            del self.targets[gone]
            self.health.pop(gone, None)
            self._runtimes.pop(gone, None)
            self.inventory.pop(gone, None)
            changed = True
        for ident, target in wanted.items():
            old = self.targets.get(ident)
            self.targets[ident] = target
            # Another address or way of probing: what we knew no longer holds.
            reset = (
                old is None
                or old.probe_identity() != target.probe_identity()
                or (old.active, old.api_format) != (target.active, target.api_format)
            )
            rescheduled = old is not None and (old.interval, old.timeout) != (target.interval, target.timeout)
            if not reset and not rescheduled:
                continue  # e.g. only thresholds changed: the running task reads them afresh
            self._stop(ident)
            if reset:
                now = self._clock.now()
                seeded = self._seed.pop(ident, None) if old is None else None
                self.health[ident] = Health.seeded(seeded, now) if seeded is not None else Health()
                self._runtimes.pop(ident, None)
                known = self._seed_inventory.pop(ident, None) if old is None else None
                self.inventory[ident] = known if known is not None else Inventory()
                changed = True
            if self.enabled and target.active:
                self._start(ident)
        self._seed.clear()
        self._seed_inventory.clear()
        if changed:
            self._on_change()

    def refresh_inventory(self, ident: str) -> None:
        """Read the backend's models again now (e.g. after a pull)."""
        if (event := self._refresh.get(ident)) is not None:
            event.set()

    def probe_now(self, ident: str) -> bool:
        """Probe the backend now (a data plane ejected it); False if it is not probed or was woken
        less than ``urgent_gap`` ago."""
        event = self._wake.get(ident)
        if event is None:
            return False
        now = self._clock.monotonic()
        last = self._last_wake.get(ident)
        if last is not None and now - last < self._urgent_gap:
            return False
        self._last_wake[ident] = now
        self._suspect.add(ident)
        event.set()
        return True

    def runtime(self, ident: str) -> BackendRuntime:
        """The runtime state the snapshot carries for ``ident``."""
        if not self.enabled:
            return UNPROBED
        if (kept := self._runtimes.get(ident)) is not None:
            return kept
        health = self.health.get(ident)
        inventory = self.inventory.get(ident)
        runtime = BackendRuntime(
            healthy=health is not None and health.healthy,
            checked=health is not None and health.checked,
            models=inventory.models if inventory is not None else (),
            models_known=inventory is not None and inventory.known,
            models_loaded=inventory.loaded if inventory is not None else (),
            dialect=inventory.dialect if inventory is not None else "",
        )
        if health is not None and inventory is not None:  # a backend the monitor holds
            self._runtimes[ident] = runtime
        return runtime

    async def close(self) -> None:
        for ident in list(self._tasks):
            self._stop(ident)
        await self.client.aclose()

    # -- the per-backend task ----------------------------------------------------------------------

    def _start(self, ident: str) -> None:
        self._refresh[ident] = asyncio.Event()
        self._wake[ident] = asyncio.Event()
        task = asyncio.create_task(self._watch(ident), name=f"ollamaflow-monitor-{ident}")
        task.add_done_callback(_log_crash)
        self._tasks[ident] = task

    def _stop(self, ident: str) -> None:
        task = self._tasks.pop(ident, None)
        self._refresh.pop(ident, None)
        self._wake.pop(ident, None)
        self._last_wake.pop(ident, None)
        self._suspect.discard(ident)
        if task is not None:
            task.cancel()

    async def _watch(self, ident: str) -> None:
        refresh = self._refresh[ident]
        # Probes and inventory reads run side by side, so each has a connection of its own.
        base_url = self.targets[ident].base_url
        probes, listings = ProbeClient(base_url, self._verify), ProbeClient(base_url, self._verify)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._probe_loop(ident, refresh, self._wake[ident], probes))
                group.create_task(self._inventory_loop(ident, refresh, listings))
        finally:
            probes.close()
            listings.close()

    def _current(self, ident: str, refresh: asyncio.Event) -> bool:
        """Whether the loops holding ``refresh`` still watch ``ident``. A stop cancels them, but a
        cancellation that races a finishing wait can be lost (wait_for in Python 3.11), so the loops
        also check before each round instead of trusting that they were stopped."""
        return self._refresh.get(ident) is refresh

    async def _probe_loop(
        self, ident: str, refresh: asyncio.Event, wake: asyncio.Event, client: ProbeClient
    ) -> None:
        loop = asyncio.get_running_loop()
        while self._current(ident, refresh):
            wake.clear()
            target = self.targets[ident]
            started = time.perf_counter()
            ok, error = await self._probe(client, target)
            if not self._current(ident, refresh):
                return  # stopped (deleted, deactivated, readdressed) while the probe ran
            took = time.perf_counter() - started
            observer = self.observer
            if observer is not None:
                observer.probed(ident, ok, took)
            health = self.health[ident]
            if health.record(ok, self._clock.now(), target.thresholds, error, took):
                self._runtimes.pop(ident, None)
                if observer is not None:
                    observer.transitioned(ident, health.healthy)
                if health.healthy:
                    log.info("backend %s is healthy", ident)
                    self.refresh_inventory(ident)
                else:
                    log.warning("backend %s is unhealthy: %s", ident, error)
                self._on_change()
            interval = target.interval or self._interval
            now = loop.time()
            # A fixed schedule at the backend's own phase: a slow probe shortens the pause instead of
            # stretching the interval, and many backends' probes spread over the interval.
            due = next_probe(ident, interval, now)
            if ok or not health.healthy:
                self._suspect.discard(ident)  # the thresholds have decided, or the backend answers
            elif ident in self._suspect:
                due = now + min(interval, self._urgent_gap)  # ejected by a data plane: confirm soon
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), due - loop.time())

    async def _probe(self, client: ProbeClient, target: BackendTarget) -> tuple[bool, str]:
        try:
            reply = await client.request(
                target.method,
                target.path(target.health_path),
                target.headers,
                within=target.timeout or self._timeout,
                limit=_PROBE_BODY,
                oversized_ok=True,
            )
        except _PROBE_ERRORS as exc:
            return False, describe_error(exc)
        if 200 <= reply.status < 300:
            return True, ""
        return False, f"{target.method} {target.health_path} answered HTTP {reply.status}"

    async def _inventory_loop(self, ident: str, refresh: asyncio.Event, client: ProbeClient) -> None:
        while self._current(ident, refresh):
            refresh.clear()
            health = self.health[ident]
            if health.healthy or not health.checked:
                await self._read_inventory(client, self.targets[ident])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(refresh.wait(), self._inventory_interval)

    async def _read_inventory(self, client: ProbeClient, target: BackendTarget) -> None:
        inventory = self.inventory[target.id]
        try:
            dialect = ""
            if target.ollama:
                tags = await self._get(client, target, "/api/tags")
                ps = await self._get(client, target, "/api/ps")
                models, sizes = parse_tags(tags)
                loaded = parse_loaded(ps)
            else:
                models, dialect = parse_openai_listing(await self._get(client, target, "/v1/models"))
                sizes, loaded = {}, ()
        except _PROBE_ERRORS as exc:
            error = describe_error(exc)
            if error != inventory.error:
                log.warning("cannot read the models of backend %s: %s", target.id, error)
            inventory.error = error
            return
        models, dropped = cap_models(models)
        loaded, dropped_loaded = cap_loaded(loaded)
        if dropped + dropped_loaded and dropped + dropped_loaded != inventory.dropped:
            log.warning(
                "backend %s lists %d model names beyond the bounds; they are left out",
                target.id,
                dropped + dropped_loaded,
            )
        inventory.dropped = dropped + dropped_loaded
        sizes = {name: sizes[name] for name in models if name in sizes}
        inventory.error = ""
        inventory.refreshed = self._clock.now()
        inventory.sizes = sizes
        if (
            not inventory.known
            or inventory.models != models
            or inventory.loaded != loaded
            or inventory.dialect != dialect
        ):
            inventory.known, inventory.models, inventory.loaded = True, models, loaded
            inventory.dialect = dialect
            self._runtimes.pop(target.id, None)
            self._on_change()

    async def _get(self, client: ProbeClient, target: BackendTarget, path: str) -> bytes:
        """The body of a model listing, read up to MAX_INVENTORY_BYTES (ValueError beyond)."""
        try:
            reply = await client.request(
                "GET",
                target.path(path),
                target.headers,
                within=max(self._timeout, 10.0),
                limit=MAX_INVENTORY_BYTES,
            )
        except BodyTooLarge as exc:
            raise ValueError(f"GET {path} {exc}") from None
        if reply.status != 200:
            raise ValueError(f"GET {path} answered HTTP {reply.status}")
        return reply.body


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("monitor task %s stopped", task.get_name(), exc_info=task.exception())
