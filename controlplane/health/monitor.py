"""The backend monitor: one task per active backend that probes its health and reads its models.

Each backend has its own task (a probe loop and an inventory loop), so a slow or hanging backend only
ever delays itself; all of them share one ``httpx.AsyncClient`` with per-request timeouts (also used
for model pulls and management calls), verifying https backends by the shared TLS policy
(``shared.tls``) and reaching them directly, whatever proxy the environment names. ``apply``
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
from controlplane.health.state import Health
from controlplane.health.targets import BackendTarget
from controlplane.publish.builder import UNPROBED, BackendRuntime
from shared.tls import backend_ssl_context

__all__ = ["REQUEST_ERRORS", "Monitor", "ProbeObserver", "describe_error"]

log = logging.getLogger("ollamaflow.controlplane.health")


# What a request to a backend can fail with: transport errors, and a URL or header (as configured)
# that httpx cannot send, e.g. a non-ASCII header value. Either way the backend cannot be reached.
REQUEST_ERRORS = (httpx.HTTPError, httpx.InvalidURL, UnicodeError)


def describe_error(exc: BaseException) -> str:
    """A short, readable reason for a failed request to a backend."""
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
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
        health = self.health.get(ident) or Health()
        inventory = self.inventory.get(ident) or Inventory()
        return BackendRuntime(
            healthy=health.healthy,
            checked=health.checked,
            models=inventory.models,
            models_known=inventory.known,
            models_loaded=inventory.loaded,
            dialect=inventory.dialect,
        )

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
        # Each backend's probes and inventory reads get a small pool of their own: httpx scans every
        # connection of a pool on each request, so one pool shared by a thousand backends made each
        # probe cost in proportion to all of them (most of the control plane's CPU at that scale).
        async with (
            self._new_client(httpx.Limits(max_connections=4, max_keepalive_connections=2)) as client,
            asyncio.TaskGroup() as group,
        ):
            group.create_task(self._probe_loop(ident, refresh, self._wake[ident], client))
            group.create_task(self._inventory_loop(ident, refresh, client))

    def _current(self, ident: str, refresh: asyncio.Event) -> bool:
        """Whether the loops holding ``refresh`` still watch ``ident``. A stop cancels them, but a
        cancellation that races a finishing wait can be lost (wait_for in Python 3.11), so the loops
        also check before each round instead of trusting that they were stopped."""
        return self._refresh.get(ident) is refresh

    async def _probe_loop(
        self, ident: str, refresh: asyncio.Event, wake: asyncio.Event, client: httpx.AsyncClient
    ) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
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
                if observer is not None:
                    observer.transitioned(ident, health.healthy)
                if health.healthy:
                    log.info("backend %s is healthy", ident)
                    self.refresh_inventory(ident)
                else:
                    log.warning("backend %s is unhealthy: %s", ident, error)
                self._on_change()
            interval = target.interval or self._interval
            if ok or not health.healthy:
                self._suspect.discard(ident)  # the thresholds have decided, or the backend answers
            elif ident in self._suspect:
                interval = min(interval, self._urgent_gap)  # ejected by a data plane: confirm soon
            # A fixed schedule: a slow probe shortens the pause instead of stretching the interval.
            due = max(due + interval, loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), due - loop.time())
                due = loop.time()  # woken by probe_now: the schedule starts again from here

    async def _probe(self, client: httpx.AsyncClient, target: BackendTarget) -> tuple[bool, str]:
        try:
            response = await client.request(
                target.method,
                target.url(target.health_path),
                headers=list(target.headers),
                timeout=target.timeout or self._timeout,
            )
        except REQUEST_ERRORS as exc:
            return False, describe_error(exc)
        if 200 <= response.status_code < 300:
            return True, ""
        return False, f"{target.method} {target.health_path} answered HTTP {response.status_code}"

    async def _inventory_loop(self, ident: str, refresh: asyncio.Event, client: httpx.AsyncClient) -> None:
        while self._current(ident, refresh):
            refresh.clear()
            health = self.health[ident]
            if health.healthy or not health.checked:
                await self._read_inventory(client, self.targets[ident])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(refresh.wait(), self._inventory_interval)

    async def _read_inventory(self, client: httpx.AsyncClient, target: BackendTarget) -> None:
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
        except (*REQUEST_ERRORS, ValueError) as exc:
            error = describe_error(exc) if isinstance(exc, REQUEST_ERRORS) else str(exc)
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
            self._on_change()

    async def _get(self, client: httpx.AsyncClient, target: BackendTarget, path: str) -> bytes:
        """The body of a model listing, read up to MAX_INVENTORY_BYTES (ValueError beyond)."""
        async with client.stream(
            "GET", target.url(path), headers=list(target.headers), timeout=max(self._timeout, 10.0)
        ) as response:
            if response.status_code != 200:
                raise ValueError(f"GET {path} answered HTTP {response.status_code}")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > MAX_INVENTORY_BYTES:
                raise ValueError(f"GET {path} answered {int(declared)} bytes, over {MAX_INVENTORY_BYTES}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_INVENTORY_BYTES:
                    raise ValueError(f"GET {path} answered more than {MAX_INVENTORY_BYTES} bytes")
            return bytes(body)


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("monitor task %s stopped", task.get_name(), exc_info=task.exception())
