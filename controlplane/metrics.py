"""The control plane's Prometheus metrics, served at ``/metrics`` (or on a port of their own).

Counted as they happen: probes by backend and result with their latency, health transitions, pull
attempts by result with the bytes they brought, snapshot publish rounds by result with their
duration, and admin API requests by method, route template and status. Read at scrape time from what
the control plane keeps anyway: whether this replica leads, each backend's health and models
(available and loaded), the pulls under way and their bytes so far, the last snapshot's size and
revision, and the data planes heard from, with the totals each one reports (requests, rejections, in
flight, queued), so one scrape of the control plane shows the whole fleet.

With several replicas only the leader probes, syncs and publishes (``controlplane.leader_work``),
and its monitor, synchroniser and publisher are new each term: this object is handed to every term
as its observer (``ControlPlane.observer``), so the counters run on across terms, and a follower's
scrape has no backend, pull-under-way or snapshot-size figures, only the registry's data planes, its
admin requests, the counts of terms it led, and the leader's publish status (the revision and
whether publishing fails) as the lease carries it.

Labels stay bounded: backend and data-plane ids are the configured or live ones, routes are Litestar's
path templates (never a raw path), methods and statuses are the few HTTP has.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from litestar import Request, Response, get
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from shared.metrics_http import CONTENT_TYPE, MetricsExposition

if TYPE_CHECKING:
    from controlplane.publish.publisher import Publisher
    from controlplane.runtime import ControlPlane
    from controlplane.settings import Settings
    from controlplane.sync.manager import Synchroniser

__all__ = ["ControlPlaneMetrics", "MetricsParts", "metrics_parts"]

_PREFIX = "ollamaflow_controlplane_"
PROBE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PUBLISH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
ADMIN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class ControlPlaneMetrics:
    """The registry of one control-plane replica, the hooks that feed it, and its ``/metrics`` route."""

    def __init__(self, plane: ControlPlane, *, token: str = "") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self._probes = Counter(
            _PREFIX + "probes",
            "Health probes by backend and result (ok, failed)",
            ["backend", "result"],
            registry=registry,
        )
        self._probe_seconds = Histogram(
            _PREFIX + "probe_duration_seconds",
            "Time health probes took, by backend",
            ["backend"],
            buckets=PROBE_BUCKETS,
            registry=registry,
        )
        self._transitions = Counter(
            _PREFIX + "health_transitions",
            "Changes of a backend's health (to: healthy or unhealthy; a first probe counts too)",
            ["backend", "to"],
            registry=registry,
        )
        self._admin = Counter(
            _PREFIX + "http_requests",
            "Requests to the control plane's HTTP API by method, route template and status code",
            ["method", "route", "status"],
            registry=registry,
        )
        self._admin_seconds = Histogram(
            _PREFIX + "http_request_duration_seconds",
            "Time the control plane took to answer, by method and route template",
            ["method", "route"],
            buckets=ADMIN_BUCKETS,
            registry=registry,
        )
        self._pull_attempts = Counter(
            _PREFIX + "pull_attempts",
            "Ended model pull attempts by backend and result (done; retrying: tried again later; "
            "failed: for good; cancelled: no longer required)",
            ["backend", "result"],
            registry=registry,
        )
        self._pulled_bytes = Counter(
            _PREFIX + "pulled_bytes",
            "Bytes pull attempts brought onto each backend (a retried attempt counts what it got)",
            ["backend"],
            registry=registry,
        )
        self._publishes = Counter(
            _PREFIX + "snapshot_publishes",
            "Snapshot publish rounds by result (stored: a new revision; skipped: the content was "
            "current; failed: NATS or the database did not let it, retried)",
            ["result"],
            registry=registry,
        )
        self._publish_seconds = Histogram(
            _PREFIX + "snapshot_publish_duration_seconds",
            "Time publish rounds took (building, sealing, signing and storing), by result",
            ["result"],
            buckets=PUBLISH_BUCKETS,
            registry=registry,
        )
        registry.register(_PlaneState(plane))
        self.exposition = MetricsExposition(registry, token)
        # Every term of leadership builds a new monitor, synchroniser and publisher: the runtime
        # hands each term this observer.
        plane.observer = self
        if (work := plane.work) is not None:  # already leading
            work.observe(self)

    # -- the monitor's hooks (controlplane.health.monitor.ProbeObserver) ----------------------------

    def probed(self, backend: str, ok: bool, seconds: float) -> None:
        self._probes.labels(backend, "ok" if ok else "failed").inc()
        self._probe_seconds.labels(backend).observe(seconds)

    def transitioned(self, backend: str, healthy: bool) -> None:
        self._transitions.labels(backend, "healthy" if healthy else "unhealthy").inc()

    # -- the synchroniser's and the publisher's hooks (controlplane.leader_work.LeaderObserver) ------

    def pull_attempt_ended(self, backend: str, result: str, pulled_bytes: int) -> None:
        self._pull_attempts.labels(backend, result).inc()
        if pulled_bytes > 0:
            self._pulled_bytes.labels(backend).inc(pulled_bytes)

    def publish_round(self, result: str, seconds: float) -> None:
        self._publishes.labels(result).inc()
        self._publish_seconds.labels(result).observe(seconds)

    # -- HTTP ----------------------------------------------------------------------------------------

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """Counts and times each routed request (Litestar runs it once a route matched)."""
        requests, seconds = self._admin, self._admin_seconds

        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            started = time.perf_counter()
            status = 500  # an exception that escapes becomes Litestar's 500

            async def noting(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                await app(scope, receive, noting)
            finally:
                route = scope.get("path_template") or "other"
                method = scope["method"]
                requests.labels(method, route, str(status)).inc()
                seconds.labels(method, route).observe(time.perf_counter() - started)

        return middleware

    def route(self) -> Any:
        """``GET /metrics``: open unless ``OLLAMAFLOW_METRICS_TOKEN`` is set, then a bearer token."""
        exposition = self.exposition

        @get("/metrics", include_in_schema=False, sync_to_thread=False)
        def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
            if not exposition.authorized(request.scope["headers"]):
                return Response(
                    b"a bearer token is required (OLLAMAFLOW_METRICS_TOKEN)\n",
                    status_code=401,
                    media_type="text/plain",
                    headers={"WWW-Authenticate": "Bearer"},
                )
            return Response(exposition.body(), media_type=CONTENT_TYPE.decode())

        return metrics

    def serving(self, host: str, port: int) -> Any:
        """A lifespan serving the metrics on ``port`` of their own for as long as the app runs."""

        @contextlib.asynccontextmanager
        async def lifespan(_app: object = None) -> AsyncIterator[None]:
            server = await self.exposition.serve(host, port)
            try:
                yield
            finally:
                server.close()

        return lifespan


@dataclass(frozen=True, slots=True)
class MetricsParts:
    """What the app adds for its metrics: the route, a lifespan serving another port, the middleware."""

    metrics: ControlPlaneMetrics | None = None
    routes: tuple[Any, ...] = ()
    lifespans: tuple[Any, ...] = ()
    middleware: tuple[Any, ...] = ()


def metrics_parts(plane: ControlPlane, settings: Settings) -> MetricsParts:
    """The metrics the settings ask for: none, on the API's port, or on a port of their own."""
    if not settings.metrics:
        return MetricsParts()
    metrics = ControlPlaneMetrics(plane, token=settings.metrics_token)
    if settings.metrics_port:
        lifespan = metrics.serving(settings.host, settings.metrics_port)
        return MetricsParts(metrics, lifespans=(lifespan,), middleware=(metrics.middleware,))
    return MetricsParts(metrics, routes=(metrics.route(),), middleware=(metrics.middleware,))


class _PlaneState(Collector):
    """What the control plane keeps anyway, read when scraped."""

    def __init__(self, plane: ControlPlane) -> None:
        self._plane = plane

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        plane = self._plane
        yield GaugeMetricFamily(
            _PREFIX + "leader",
            "1 if this replica holds the control-plane lease (probes, syncs and publishes), 0 if not",
            value=1 if plane.lease.is_leader else 0,
        )
        # Read once: a term may end (and these become None) while the scrape runs.
        monitor, sync, publisher = plane.monitor, plane.sync, plane.publisher
        healthy = GaugeMetricFamily(
            _PREFIX + "backend_healthy",
            "1 if the backend is healthy, 0 if not or not probed yet",
            labels=["backend"],
        )
        failures = GaugeMetricFamily(
            _PREFIX + "backend_consecutive_failures", "Failed probes in a row", labels=["backend"]
        )
        models = GaugeMetricFamily(
            _PREFIX + "backend_models", "Models each backend lists (once read)", labels=["backend"]
        )
        loaded = GaugeMetricFamily(
            _PREFIX + "backend_models_loaded",
            "Models each backend holds in memory (Ollama's /api/ps)",
            labels=["backend"],
        )
        for backend in sorted(monitor.targets) if monitor is not None else ():
            health = monitor.health.get(backend)
            healthy.add_metric([backend], 1 if health is not None and health.healthy else 0)
            failures.add_metric([backend], health.failures if health is not None else 0)
            inventory = monitor.inventory.get(backend)
            if inventory is not None and inventory.known:
                models.add_metric([backend], len(inventory.models))
                loaded.add_metric([backend], len(inventory.loaded))
        yield from (healthy, failures, models, loaded)
        yield from self._pulls(sync)
        yield from self._publishes(publisher)
        yield from self._dataplanes()

    def _pulls(self, sync: Synchroniser | None) -> Iterator[GaugeMetricFamily]:
        by_state = GaugeMetricFamily(
            _PREFIX + "pulls",
            "Model pulls this replica knows of, by state (queued, pulling, retrying, done, failed)",
            labels=["state"],
        )
        completed = GaugeMetricFamily(
            _PREFIX + "pull_completed_bytes",
            "Bytes the pulls under way have brought so far, by backend",
            labels=["backend"],
        )
        states: dict[str, int] = dict.fromkeys(("queued", "pulling", "retrying", "done", "failed"), 0)
        done_bytes: dict[str, int] = {}
        for job in list(sync.jobs.values()) if sync is not None else ():
            states[job.state] = states.get(job.state, 0) + 1
            if job.state in ("pulling", "retrying"):
                done_bytes[job.backend] = done_bytes.get(job.backend, 0) + job.completed
        for state, count in states.items() if sync is not None else ():
            by_state.add_metric([state], count)
        for backend, count in sorted(done_bytes.items()):
            completed.add_metric([backend], count)
        yield by_state
        yield completed

    def _publishes(self, publisher: Publisher | None) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        status = self._plane.publish_status  # the leader's, as the lease carries it, on a follower
        yield GaugeMetricFamily(
            _PREFIX + "snapshot_revision",
            "Revision of the snapshot on the bus as of the leader's last publish (0: none known)",
            value=status.revision,
        )
        yield GaugeMetricFamily(
            _PREFIX + "snapshot_publish_failing",
            "1 if the leader's last publish failed (it retries; /readyz says why), 0 if not",
            value=1 if status.last_error else 0,
        )
        size = GaugeMetricFamily(
            _PREFIX + "snapshot_bytes",
            "Encoded size of the last snapshot this replica stored in its current term of leadership",
        )
        if publisher is not None:
            size.add_metric([], publisher.last_size)
        yield size

    def _dataplanes(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        registry = self._plane.registry
        live = GaugeMetricFamily(_PREFIX + "dataplanes_live", "Data planes whose reports are current")
        live.add_metric([], len(registry.live_ids()))
        yield live
        labels = ["dataplane"]
        requests = CounterMetricFamily(
            _PREFIX + "dataplane_requests",
            "Proxied requests each live data plane reports since it started",
            labels=labels,
        )
        rejected = CounterMetricFamily(
            _PREFIX + "dataplane_rejected_requests",
            "Requests each live data plane turned away (queue full or wait expired) since it started",
            labels=labels,
        )
        in_flight = GaugeMetricFamily(
            _PREFIX + "dataplane_in_flight", "Requests each live data plane has under way", labels=labels
        )
        queued = GaugeMetricFamily(
            _PREFIX + "dataplane_queued",
            "Requests waiting in each live data plane's queues (per backend they could go to, summed)",
            labels=labels,
        )
        revision = GaugeMetricFamily(
            _PREFIX + "dataplane_applied_revision",
            "Snapshot revision each live data plane applied",
            labels=labels,
        )
        for sighting in registry.sightings():
            if not registry.is_live(sighting):
                continue
            report = sighting.report
            requests.add_metric([report.id], report.requests_total)
            rejected.add_metric([report.id], report.rejected_total)
            in_flight.add_metric([report.id], sum(report.in_flight.values()))
            queued.add_metric([report.id], sum(report.queued.values()))
            revision.add_metric([report.id], report.applied_revision)
        yield from (requests, rejected, in_flight, queued, revision)
