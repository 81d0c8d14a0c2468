"""The data plane as a raw ASGI application: a route table from path to handler, and the lifespan.

Each path has its API format, so its errors come out in the shape its clients parse. Proxied paths
name the kind of request they carry; the OpenAI paths and the rest of the Ollama API slot into
``_routes`` the same way. Each route also names what it asks of the frontend's access settings
(``dataplane.limits.access``): those checks run before its handler, and only when they can refuse something
(model management, a frontend requiring API keys somewhere, or an HTTP/1.0 request).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import importlib.metadata
import logging
import secrets
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from dataplane.drain import Answer, Drain, drained_message, end_answer
from dataplane.explain_bus import Explainer
from dataplane.follower import BusSync, ReportIdentity
from dataplane.http.cors import Cors, request_origin
from dataplane.http.incoming import BodyReader, Receive
from dataplane.http.paths import BLOB_PREFIX, MODEL_PREFIX, raw_path
from dataplane.http.request_context import new_id_header, running_task
from dataplane.http.responses import JSON, OLLAMA_VERSION, TEXT, Send, send_bytes, send_error, send_json
from dataplane.limits.access import Access, Guard
from dataplane.limits.admission import Admission
from dataplane.limits.breaker import Breakers
from dataplane.limits.traffic import Traffic
from dataplane.models.authoring import Authoring
from dataplane.models.listing import Listing
from dataplane.models.manage import ModelManagement
from dataplane.observe.access_log import AccessLog
from dataplane.observe.ended import Ended
from dataplane.observe.metrics import DataPlaneMetrics
from dataplane.observe.metrics_state import DataPlaneState
from dataplane.observe.request_log import UNLOGGED_PATHS, LoggedAnswer, RequestLog
from dataplane.observe.tracing import Tracing
from dataplane.proxy.call import Call
from dataplane.proxy.handler import Endpoint, Proxy
from dataplane.routing.table import RequestKind
from dataplane.settings import DataPlaneSettings
from dataplane.state import SnapshotState
from dataplane.translate.common import random_id
from dataplane.translate.exchanges import Translations
from dataplane.upstream.builtin import Upstream
from dataplane.upstream.transport import Transport
from shared.bus import Bus, BusNames
from shared.bus_connect import BusLogin
from shared.errors import ConfigError
from shared.heap import HeapFreezer
from shared.metrics_http import CONTENT_TYPE, MetricsExposition
from shared.signing import SnapshotTrust
from shared.signing_keys import load_trust
from shared.snapshot import ApiFormat, Snapshot
from shared.tls import backend_ssl_context

__all__ = ["DataPlane", "create_app"]

log = logging.getLogger("ollamaflow.dataplane")

Handler = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]

PROXIED = (
    Endpoint("/api/generate", RequestKind.COMPLETIONS, "Ollama"),
    Endpoint("/api/chat", RequestKind.COMPLETIONS, "Ollama"),
    Endpoint("/api/embed", RequestKind.EMBEDDINGS, "Ollama"),
    Endpoint("/api/embeddings", RequestKind.EMBEDDINGS, "Ollama"),
    Endpoint("/v1/chat/completions", RequestKind.COMPLETIONS, "OpenAI"),
    Endpoint("/v1/completions", RequestKind.COMPLETIONS, "OpenAI"),
    Endpoint("/v1/embeddings", RequestKind.EMBEDDINGS, "OpenAI"),
)


@dataclass(frozen=True, slots=True)
class Route:
    methods: frozenset[str]
    handler: Handler
    api_format: ApiFormat = "Ollama"
    guard: Guard | None = None  # None: the data plane's own probes, open to all
    # Its answers may take a while: a drain that times out ends them (dataplane.drain), knowing what
    # went out from a wrapped ``send``, or from the handler itself (``own_answer``: the proxy, whose
    # hot path is not wrapped). Instant answers need neither.
    endable: bool = False
    own_answer: bool = False


def _address(settings: DataPlaneSettings) -> str:
    host = settings.dataplane_host
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    return f"http://{host}:{settings.dataplane_port}"


def upstream_client(settings: DataPlaneSettings, ssl_context: ssl.SSLContext) -> Transport:
    """The upstream client ``OLLAMAFLOW_UPSTREAM_CLIENT`` names: the builtin one, or the aiohttp
    reference (imported only when chosen, so that the data plane runs without aiohttp installed)."""
    options = {
        "connect_timeout": settings.upstream_connect_timeout,
        "max_connections": settings.upstream_max_connections,
        "ssl_context": ssl_context,
    }
    if settings.upstream_client == "aiohttp":
        try:
            from dataplane.upstream.aiohttp_client import AiohttpUpstream
        except ImportError as exc:
            raise ConfigError(
                "OLLAMAFLOW_UPSTREAM_CLIENT=aiohttp needs the aiohttp package "
                f"(pip install 'ollamaflow[aiohttp]'), or use the builtin client: {exc}"
            ) from None
        return AiohttpUpstream(**options)  # type: ignore[arg-type]
    return Upstream(**options)  # type: ignore[arg-type]


def _version() -> str:
    try:
        return importlib.metadata.version("ollamaflow")
    except importlib.metadata.PackageNotFoundError:
        return ""


def snapshot_trust(settings: DataPlaneSettings) -> SnapshotTrust:
    """The keys whose snapshots this data plane accepts (ConfigError if it could accept none)."""
    trust = load_trust(settings.snapshot_public_key_files, allow_unsigned=settings.allow_unsigned_snapshots)
    if trust.allow_unsigned:
        log.warning(
            "OLLAMAFLOW_ALLOW_UNSIGNED_SNAPSHOTS is on: unsigned snapshots are accepted, so anyone who "
            "can write to the bus can route this data plane (development only)"
        )
    return trust


class DataPlane:
    """The ASGI callable. Built once at start-up; everything it uses hangs off it."""

    def __init__(
        self, settings: DataPlaneSettings, *, bus: Bus | None = None, upstream: Transport | None = None
    ) -> None:
        """``bus`` and ``upstream`` replace the ones the settings name (tests: the in-memory bus,
        simulators called in-process)."""
        self.settings = settings
        self.state = SnapshotState(
            cache_path=settings.snapshot_cache, keyring=settings.secrets, trust=snapshot_trust(settings)
        )
        self.traffic = Traffic()
        self.drain = Drain()
        tls = backend_ssl_context(settings.backend_ca_file, settings.backend_tls_verify)
        self.upstream = upstream or upstream_client(settings, tls)
        names = BusNames(settings.bus_namespace)
        self.bus = bus or Bus(
            settings.nats_url,
            names,
            client_name=f"dataplane-{settings.dataplane_id}",
            login=BusLogin.of(settings, inbox_prefix=names.inbox_prefix("dataplane")),
        )
        identity = ReportIdentity(
            id=settings.dataplane_id,
            address=_address(settings),
            started_at=datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z"),
            version=_version(),
            start_id=secrets.token_hex(8),
        )
        self.breakers = Breakers(
            time.monotonic, threshold=settings.eject_after_errors, cooldown=settings.eject_cooldown
        )
        self.admission = Admission(settings.dataplane_id)
        # Limits follow each applied snapshot at once, so the revision this data plane reports is the
        # one its admission enforces (peers rely on that when shares move).
        self.state.listeners.append(self.admission.refresh)
        self.access = Access(settings.dataplane_id, self.state)
        self.state.listeners.append(self.access.refresh)
        self._heap = HeapFreezer()
        self._freeze_pending = False
        self.state.listeners.append(self._freeze_soon)
        self.sync = BusSync(
            self.bus,
            self.state,
            self.traffic,
            identity,
            breakers=self.breakers,
            admission=self.admission,
            access=self.access,
            poll_interval=settings.snapshot_poll_interval,
            report_interval=settings.report_interval,
            drain=self.drain,
        )
        self.drain.on_begin.append(self.sync.report_now)  # the control plane hears it at once
        translations = Translations(random_id)
        self.metrics = DataPlaneMetrics(max_models=settings.metrics_max_models) if settings.metrics else None
        self.exposition: MetricsExposition | None = None
        live: set[Call] = set()
        if self.metrics is not None:
            live = self.metrics.live
            self.metrics.registry.register(
                DataPlaneState(
                    dataplane_id=settings.dataplane_id,
                    version=identity.version,
                    traffic=self.traffic,
                    admission=self.admission,
                    breakers=self.breakers,
                    state=self.state,
                    drain=self.drain,
                    live=live,
                )
            )
            self.exposition = MetricsExposition(self.metrics.registry, settings.metrics_token)
        # Traces only when an OTLP endpoint is named: nothing of OpenTelemetry is imported otherwise.
        self.tracing: Tracing | None = None
        if settings.otel_endpoint:
            self.tracing = Tracing.exporting(settings.otel_endpoint, settings.dataplane_id)
        measured = self.metrics is not None or settings.access_log or self.tracing is not None
        self.access_log = AccessLog(settings.log_format) if settings.access_log else None
        observe: Callable[[Ended], None] | None = None
        if self.metrics is not None and self.access_log is None and self.tracing is None:
            observe = self.metrics.observe  # the only observer: called directly
        elif measured:
            observe = RequestLog(self.metrics, self.access_log)
        self._metrics_server: asyncio.Server | None = None
        bodies = BodyReader(
            max_json=settings.max_json_body,
            piece_timeout=settings.client_body_timeout,
            errors=self.traffic.client_errors,
        )
        proxy = Proxy(
            self.state,
            self.upstream,
            self.traffic,
            translations,
            self.breakers,
            admission=self.admission,
            access=self.access,
            bodies=bodies,
            max_translated_body=settings.max_translated_body,
            drain=self.drain,
            observe=observe,
            live=live,
            tracing=self.tracing,
        )
        get_head, get, post = frozenset({"GET", "HEAD"}), frozenset({"GET"}), frozenset({"POST"})
        probe, serve, manages = Guard.PROTOCOL, Guard.SERVE, Guard.MANAGE
        self._routes: dict[str, Route] = {
            "/": Route(get_head, self._root, guard=probe),
            "/api/version": Route(get_head, self._version, guard=probe),
            "/healthz": Route(get_head, self._healthz),
            "/readyz": Route(get_head, self._readyz),
        }
        if self.exposition is not None and not settings.dataplane_metrics_port:
            # The data plane's own path, like /healthz: no client API uses it, and it answers
            # whatever the Host (frontends are matched by Host only on the proxied paths).
            self._routes["/metrics"] = Route(get_head, self._metrics)
        for endpoint in PROXIED:
            handler = functools.partial(proxy.handle, endpoint=endpoint)
            route = Route(post, handler, endpoint.api_format, serve, endable=True, own_answer=True)
            self._routes[endpoint.path] = route
        listing = Listing(self.state, self.upstream, bodies=bodies)
        self._routes["/api/tags"] = Route(get_head, listing.tags, guard=serve, endable=True)
        self._routes["/api/ps"] = Route(get, listing.ps, guard=serve, endable=True)
        self._routes["/api/show"] = Route(post, listing.show, guard=serve, endable=True)
        self._routes["/v1/models"] = Route(get, listing.models, "OpenAI", serve, endable=True)
        self._routes[MODEL_PREFIX] = Route(get, listing.model, "OpenAI", serve, endable=True)  # + the id
        manage = ModelManagement(self.state, self.bus, bodies=bodies)
        self.authoring = Authoring(
            self.state,
            manage,
            connect_timeout=settings.upstream_connect_timeout,
            bodies=bodies,
            ssl_context=tls,
        )
        self._routes["/api/pull"] = Route(post, manage.pull, guard=manages, endable=True)
        self._routes["/api/delete"] = Route(frozenset({"DELETE"}), manage.delete, guard=manages, endable=True)
        self._routes["/api/copy"] = Route(post, manage.copy, guard=manages, endable=True)
        self._routes["/api/create"] = Route(post, self.authoring.create, guard=manages, endable=True)
        self._routes["/api/push"] = Route(post, self.authoring.push, guard=manages, endable=True)
        blob = Route(frozenset({"HEAD", "POST"}), self.authoring.blob, guard=manages, endable=True)
        self._routes[BLOB_PREFIX] = blob  # + the digest
        self._sync_task: asyncio.Task[None] | None = None
        # How long start-up waits for a first snapshot before the server listens (0: not at all). A
        # worker of ``ollamaflow dataplane --workers`` waits: its port already answers through the
        # other workers, and connections meant for it wait in its socket rather than get a 404.
        self.snapshot_wait = 0.0
        self.explainer = Explainer(
            settings.dataplane_id, self.state, self.traffic, self.breakers, share_of=self._share_of
        )
        self._explain_task: asyncio.Task[None] | None = None
        # Browser pages on other origins (dataplane.http.cors); None: off, and nothing looks for Origin.
        self.cors = Cors(settings.dataplane_cors_origins) if settings.dataplane_cors_origins else None

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            cors = self.cors
            if cors is not None and (origin := request_origin(scope["headers"])) is not None:
                await cors.handle(scope, receive, send, origin, self._http)
                return
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        # The raw path: a percent-encoded "/" or "." must not reach another route (dataplane.http.paths).
        path = raw_path(scope)
        route = self._routes.get(path)
        if route is None and len(path) > 1 and path.endswith("/"):
            route = self._routes.get(path[:-1])
        if route is None and path.startswith(MODEL_PREFIX):
            route = self._routes[MODEL_PREFIX]
        if route is None and path.startswith(BLOB_PREFIX):
            route = self._routes[BLOB_PREFIX]  # its handler accepts only a well-formed digest
        # The proxy logs the requests it handles (dataplane.observe.request_log); the rest are logged here.
        logged = None if route is not None and route.own_answer else self._logged(path, route, scope, send)
        if logged is None:
            await self._dispatch(path, route, scope, receive, send)
            return
        try:
            await self._dispatch(path, route, scope, receive, logged)
        finally:
            logged.done()

    def _logged(
        self, path: str, route: Route | None, scope: MutableMapping[str, Any], send: Send
    ) -> LoggedAnswer | None:
        """``send`` wrapped to write an access-log line, or None where nothing is logged."""
        access_log = self.access_log
        if access_log is None or not access_log.enabled or path in UNLOGGED_PATHS:
            return None
        logged = LoggedAnswer(access_log, send, scope["method"], path, scope["headers"])
        if route is not None:
            logged.speaking(route.api_format)
        return logged

    async def _dispatch(
        self, path: str, route: Route | None, scope: MutableMapping[str, Any], receive: Receive, send: Send
    ) -> None:
        if route is None:
            shown = path if len(path) <= 200 else path[:200] + "..."
            await send_error(send, "Ollama", 404, f"no route for {shown}")
        elif scope["method"] not in route.methods:
            allow = ", ".join(sorted(route.methods)).encode()
            await self._before_handler(
                path,
                route,
                scope,
                send,
                lambda out: send_error(out, route.api_format, 405, "method not allowed", [(b"allow", allow)]),
            )
        else:
            guard = route.guard
            if guard is not None and (
                guard is Guard.MANAGE
                or (guard is Guard.SERVE and self.access.keys_required)
                or scope["http_version"] == "1.0"
            ):
                refusal = self.access.check(scope["headers"], guard, scope["http_version"] == "1.0")
                if refusal is not None:
                    id_header = new_id_header()
                    body = refusal.body(route.api_format)
                    headers = [id_header, *refusal.headers]
                    await self._before_handler(
                        path,
                        route,
                        scope,
                        send,
                        lambda out: send_bytes(out, refusal.status, body, JSON, headers),
                    )
                    return
            if route.endable:
                await self._endable(route, scope, receive, send)
            else:
                await route.handler(scope, receive, send)

    async def _before_handler(
        self,
        path: str,
        route: Route,
        scope: MutableMapping[str, Any],
        send: Send,
        answer: Callable[[Send], Awaitable[None]],
    ) -> None:
        """Give ``answer`` before the route's handler runs: logged here for the proxy's routes, which
        log only what reaches them (other routes' ``send`` is already logged)."""
        logged = self._logged(path, route, scope, send) if route.own_answer else None
        await answer(logged or send)
        if logged is not None:
            logged.done()

    async def _endable(
        self, route: Route, scope: MutableMapping[str, Any], receive: Receive, send: Send
    ) -> None:
        """Run a route whose answer the drain may have to end, tracking what it sent."""
        task = running_task()
        answer = None if route.own_answer else Answer(send)  # None: nothing sent until it says more
        drain = self.drain
        drain.enter(task, answer)
        try:
            await route.handler(scope, receive, send if answer is None else answer)
        except asyncio.CancelledError:
            if not drain.ended(task):
                raise
            task.uncancel()
            # The handler may have said more about what it sent (the proxy registers its own).
            await end_answer(send, drain.answer_of(task), route.api_format, drained_message())
        finally:
            drain.leave(task)

    async def _root(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        await send_bytes(send, 200, b"Ollama is running", TEXT)

    async def _version(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        await send_json(send, 200, {"version": OLLAMA_VERSION})

    async def _healthz(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        await send_json(send, 200, {"status": "ok", "id": self.settings.dataplane_id})

    async def _readyz(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        drain = self.drain
        if drain.draining:  # stopping: send nothing new here (only existing connections still reach it)
            body = {
                "status": "draining",
                "detail": f"shutting down: {drain.running} request(s) still running, "
                f"for at most {self.settings.drain_timeout:g} s from the stop signal",
                "revision": self.state.revision,
            }
            await send_json(send, 503, body)
            return
        if self.state.snapshot is None:
            body = {"status": "starting", "detail": "no snapshot yet (from NATS or the disk cache)"}
            await send_json(send, 503, body)
            return
        body = {"status": "ok", "revision": self.state.revision, "nats": self.bus.connected}
        if self.state.error:
            body["snapshot_error"] = self.state.error
        await send_json(send, 200, body)

    async def _metrics(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        exposition = self.exposition
        assert exposition is not None
        if not exposition.authorized(scope["headers"]):
            message = b"a bearer token is required (OLLAMAFLOW_METRICS_TOKEN)\n"
            await send_bytes(send, 401, message, TEXT, [(b"www-authenticate", b"Bearer")])
            return
        await send_bytes(send, 200, exposition.body(), CONTENT_TYPE)

    async def startup(self) -> None:
        if self.exposition is not None and self.settings.dataplane_metrics_port:
            self._metrics_server = await self.exposition.serve(
                self.settings.dataplane_host, self.settings.dataplane_metrics_port
            )
        await self.upstream.start()
        await self.authoring.start()
        self.state.load_cache()
        self._sync_task = asyncio.create_task(self.sync.run(), name="bus-sync")
        self._explain_task = asyncio.create_task(self.explainer.run(self.bus), name="explain-responder")
        # A draining data plane leaves routing dry-runs to the planes that stay.
        self.drain.on_begin.append(self._stop_explaining)
        if self.snapshot_wait > 0:
            await self._first_snapshot(self.snapshot_wait)

    async def _first_snapshot(self, within: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while self.state.snapshot is None and not self.drain.draining:
            if loop.time() >= deadline:
                log.warning("no snapshot after %g s (from NATS or the disk cache); serving without", within)
                return
            await asyncio.sleep(0.02)

    def _freeze_soon(self, snapshot: Snapshot) -> None:
        """After the first snapshot, and one whose configuration doubled, keep the collector off the
        heap built so far; a second later, so that neither the report nor requests wait for it."""
        if self._freeze_pending or not self._heap.due(len(snapshot.content.backends)):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # applied outside the event loop (a test, a tool): the next apply freezes
            return
        self._freeze_pending = True
        loop.call_later(1.0, self._freeze)

    def _freeze(self) -> None:
        self._freeze_pending = False
        held = self.state.snapshot
        self._heap.freeze(len(held.content.backends) if held is not None else 0)

    def _stop_explaining(self) -> None:
        if self._explain_task is not None:
            self._explain_task.cancel()

    def _share_of(self, backend_id: str) -> int | None:
        """This data plane's share of a backend's MaxParallelRequests, for routing explanations."""
        gate = self.admission.gates.gate(backend_id)
        return gate.max_parallel if gate is not None else None

    async def shutdown(self) -> None:
        if self.access_log is not None:
            self.access_log.flush()
        if self._metrics_server is not None:
            self._metrics_server.close()
        if self._explain_task is not None:
            self._explain_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._explain_task
        if self._sync_task is not None:
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync_task
        self.state.save_now()  # a revision applied in the last moments is on disk too
        await self.authoring.close()
        await self.upstream.close()
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.shutdown)  # exports the spans still batched

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("data plane start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(settings: DataPlaneSettings) -> DataPlane:
    return DataPlane(settings)
