"""What a data plane is made of, wired once from its settings.

``DataPlaneParts`` builds every part in the order they depend on one another (the snapshot state first,
then the limits that follow it, the bus sync that feeds it, the observers, and the handlers); the ASGI
app (``dataplane.app``) routes requests to those handlers and runs their lifecycle.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import logging
import secrets
import socket
import ssl
import time
from collections.abc import Callable

from dataplane.drain import Drain
from dataplane.explain_bus import Explainer
from dataplane.follower import BusSync, ReportIdentity
from dataplane.http.cors import Cors
from dataplane.http.incoming import BodyReader
from dataplane.limits.access import Access
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
from dataplane.observe.request_log import RequestLog
from dataplane.observe.tracing import Tracing
from dataplane.proxy.call import Call
from dataplane.proxy.handler import Proxy
from dataplane.settings import DataPlaneSettings
from dataplane.state import SnapshotState
from dataplane.translate.common import random_id
from dataplane.translate.exchanges import Translations
from dataplane.upstream.builtin import Upstream
from dataplane.upstream.transport import Transport
from shared.bus import Bus, BusNames
from shared.bus_connect import BusLogin
from shared.errors import ConfigError
from shared.metrics_http import MetricsExposition
from shared.signing import SnapshotTrust
from shared.signing_keys import load_trust
from shared.tls import backend_ssl_context

__all__ = ["DataPlaneParts", "snapshot_trust", "upstream_client"]

log = logging.getLogger("ollamaflow.dataplane")


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


def snapshot_trust(settings: DataPlaneSettings) -> SnapshotTrust:
    """The keys whose snapshots this data plane accepts (ConfigError if it could accept none)."""
    trust = load_trust(settings.snapshot_public_key_files, allow_unsigned=settings.allow_unsigned_snapshots)
    if trust.allow_unsigned:
        log.warning(
            "OLLAMAFLOW_ALLOW_UNSIGNED_SNAPSHOTS is on: unsigned snapshots are accepted, so anyone who "
            "can write to the bus can route this data plane (development only)"
        )
    return trust


def _address(settings: DataPlaneSettings) -> str:
    host = settings.dataplane_host
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    return f"http://{host}:{settings.dataplane_port}"


def _version() -> str:
    try:
        return importlib.metadata.version("ollamaflow")
    except importlib.metadata.PackageNotFoundError:
        return ""


def _identity(settings: DataPlaneSettings) -> ReportIdentity:
    """Who this data plane says it is in its reports (a new ``start_id`` at each start)."""
    return ReportIdentity(
        id=settings.dataplane_id,
        address=_address(settings),
        started_at=datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z"),
        version=_version(),
        start_id=secrets.token_hex(8),
    )


class DataPlaneParts:
    """Every part of one data plane, built from its settings; the app (``dataplane.app.DataPlane``)
    adds the routes and the lifecycle."""

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
        self.tls = backend_ssl_context(settings.backend_ca_file, settings.backend_tls_verify)
        self.upstream = upstream or upstream_client(settings, self.tls)
        names = BusNames(settings.bus_namespace)
        self.bus = bus or Bus(
            settings.nats_url,
            names,
            client_name=f"dataplane-{settings.dataplane_id}",
            login=BusLogin.of(settings, inbox_prefix=names.inbox_prefix("dataplane")),
        )
        identity = _identity(settings)
        self._limits(settings)
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
        observe, live = self._observers(settings, identity.version)
        self.bodies = BodyReader(
            max_json=settings.max_json_body,
            piece_timeout=settings.client_body_timeout,
            errors=self.traffic.client_errors,
        )
        self.proxy = Proxy(
            self.state,
            self.upstream,
            self.traffic,
            Translations(random_id),
            self.breakers,
            admission=self.admission,
            access=self.access,
            bodies=self.bodies,
            max_translated_body=settings.max_translated_body,
            drain=self.drain,
            observe=observe,
            live=live,
            tracing=self.tracing,
        )
        self.listing = Listing(self.state, self.upstream, bodies=self.bodies)
        self.manage = ModelManagement(self.state, self.bus, bodies=self.bodies)
        self.authoring = Authoring(
            self.state,
            self.manage,
            connect_timeout=settings.upstream_connect_timeout,
            bodies=self.bodies,
            ssl_context=self.tls,
        )
        self.explainer = Explainer(
            settings.dataplane_id, self.state, self.traffic, self.breakers, share_of=self._share_of
        )
        # Browser pages on other origins (dataplane.http.cors); None: off, and nothing looks for Origin.
        self.cors = Cors(settings.dataplane_cors_origins) if settings.dataplane_cors_origins else None

    def _limits(self, settings: DataPlaneSettings) -> None:
        self.breakers = Breakers(
            time.monotonic, threshold=settings.eject_after_errors, cooldown=settings.eject_cooldown
        )
        self.admission = Admission(settings.dataplane_id)
        # Limits follow each applied snapshot at once, so the revision this data plane reports is the
        # one its admission enforces (peers rely on that when shares move).
        self.state.listeners.append(self.admission.refresh)
        self.access = Access(settings.dataplane_id, self.state)
        self.state.listeners.append(self.access.refresh)

    def _observers(
        self, settings: DataPlaneSettings, version: str
    ) -> tuple[Callable[[Ended], None] | None, set[Call]]:
        """Metrics, access log and traces as configured: what the proxy calls when a request ends (None:
        nothing observes), and the set of running requests the metrics read (empty without them)."""
        self.metrics = DataPlaneMetrics(max_models=settings.metrics_max_models) if settings.metrics else None
        self.exposition: MetricsExposition | None = None
        live: set[Call] = set()
        if self.metrics is not None:
            live = self.metrics.live
            self.metrics.registry.register(
                DataPlaneState(
                    dataplane_id=settings.dataplane_id,
                    version=version,
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
        self.access_log = AccessLog(settings.log_format) if settings.access_log else None
        if self.metrics is not None and self.access_log is None and self.tracing is None:
            return self.metrics.observe, live  # the only observer: called directly
        if self.metrics is not None or self.access_log is not None or self.tracing is not None:
            return RequestLog(self.metrics, self.access_log), live
        return None, live

    def _share_of(self, backend_id: str) -> int | None:
        """This data plane's share of a backend's MaxParallelRequests, for routing explanations."""
        gate = self.admission.gates.gate(backend_id)
        return gate.max_parallel if gate is not None else None
