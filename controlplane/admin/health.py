"""Runtime views the admin API adds to OllamaFlow's: backend health, the cluster's models, pulls.

``/v1.0/backends/health`` and ``/v1.0/backends/{id}/health`` answer as OllamaFlow does (the Backend
plus HealthySinceUtc, UnhealthySinceUtc, Uptime, Downtime) and add what it lacks: a Healthy boolean,
the probe counters and last error, the backend's models, and the passive observations: EjectedBy
names the live data planes whose circuit breaker ejected it, and why. ``/v1.0/models`` shows which backend
has, has loaded and lacks which model; ``/v1.0/pulls`` the model pulls and ``/v1.0/pulls/stream``
their progress live (NDJSON, one PullOut per line: the current state first, then every change).
All of it is what the leading control-plane replica observes: another replica answers these views
with 503 naming the leader (``controlplane.admin.leadership``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

import msgspec
from litestar import get
from litestar.di import NamedDependency
from litestar.response import Stream

from controlplane.admin.schemas import BackendOut
from controlplane.clock import Clock
from controlplane.errors import error_responses
from controlplane.health.inventory import Inventory
from controlplane.health.monitor import Monitor
from controlplane.health.state import Health, timespan
from controlplane.reports import DataPlaneRegistry
from controlplane.sync.manager import Synchroniser
from controlplane.sync.plan import PullJob
from shared.models import model_key

__all__ = [
    "BackendHealthOut",
    "LayerOut",
    "LoadedOut",
    "ModelOut",
    "PullOut",
    "active_requests",
    "backend_health",
    "list_models",
    "list_pulls",
    "pull_out",
    "stream_pulls",
]


class LoadedOut(msgspec.Struct, kw_only=True, rename="pascal"):
    """A model held in a backend's memory (Ollama's /api/ps)."""

    backend: str = ""
    name: str
    expires_at: str = ""
    size_vram: int = 0


class BackendHealthOut(BackendOut, kw_only=True):
    """A backend with what the health probes and inventory reads observed."""

    healthy: bool = False
    health_checked: bool = False
    active_requests: int = 0
    """Requests in flight to this backend, summed over the live data planes' last reports."""
    ejected_by: dict[str, str] = {}
    """Data plane id -> reason, for each live data plane whose last report ejects this backend."""
    healthy_since_utc: datetime | None = None
    unhealthy_since_utc: datetime | None = None
    uptime: str | None = None
    downtime: str | None = None
    last_check_utc: datetime | None = None
    last_error: str = ""
    probe_latency_ms: float | None = None
    """How long the last probe took, if it succeeded: the backend's responsiveness as this replica
    sees it (requests' own latency is in the data planes' metrics)."""
    consecutive_successes: int = 0
    consecutive_failures: int = 0
    models: list[str] = []
    models_loaded: list[LoadedOut] = []
    models_refreshed_utc: datetime | None = None
    models_error: str = ""
    models_dropped: int = 0
    """Model names the last inventory read left out: beyond 4,096 per backend or over 256 characters."""
    dialect: str = ""
    """"vllm" when an OpenAI-format backend's /v1/models says so; it then gets vLLM's extra options."""


class ModelOut(msgspec.Struct, kw_only=True, rename="pascal"):
    """One model across the cluster."""

    name: str
    available_on: list[str]
    loaded_on: list[LoadedOut]
    required_on: list[str]
    missing_on: list[str]


class LayerOut(msgspec.Struct, kw_only=True, rename="pascal"):
    """One layer of a pull: bytes done and its size, as the backend last said."""

    completed: int
    total: int


class PullOut(msgspec.Struct, kw_only=True, rename="pascal"):
    """One model pull onto one backend."""

    backend: str
    model: str
    state: str
    status: str
    completed_bytes: int
    total_bytes: int
    attempts: int
    error: str
    created_utc: datetime | None
    updated_utc: datetime | None
    next_attempt_utc: datetime | None
    layers: dict[str, LayerOut] = {}
    """Layer digest -> its progress; CompletedBytes and TotalBytes are their sums."""


def active_requests(registry: DataPlaneRegistry) -> dict[str, int]:
    """Backend id -> requests in flight, over every live data plane."""
    totals: dict[str, int] = {}
    for sighting in registry.sightings():
        if registry.is_live(sighting):
            for ident, count in sighting.report.in_flight.items():
                totals[ident] = totals.get(ident, 0) + count
    return totals


def backend_health(
    backend: BackendOut,
    monitor: Monitor,
    clock: Clock,
    in_flight: dict[str, int],
    ejections: dict[str, dict[str, str]],
) -> BackendHealthOut:
    ident = backend.identifier or ""
    passive = {"active_requests": in_flight.get(ident, 0), "ejected_by": ejections.get(ident, {})}
    now = clock.now()
    health = monitor.health.get(ident) or Health()
    inventory = monitor.inventory.get(ident) or Inventory()
    fields = {f: getattr(backend, f) for f in backend.__struct_fields__}
    if not monitor.enabled:  # nobody probes: trusted, as the snapshot says
        return BackendHealthOut(**fields, **passive, healthy=True)
    return BackendHealthOut(
        **fields,
        **passive,
        healthy=health.healthy,
        health_checked=health.checked,
        healthy_since_utc=health.healthy_since,
        unhealthy_since_utc=health.unhealthy_since,
        uptime=timespan(health.uptime(now)),
        downtime=timespan(health.downtime(now)),
        last_check_utc=health.last_check,
        last_error=health.last_error,
        probe_latency_ms=health.latency_ms,
        consecutive_successes=health.successes,
        consecutive_failures=health.failures,
        models=list(inventory.models),
        models_loaded=[
            LoadedOut(name=m.name, expires_at=m.expires_at, size_vram=m.size_vram) for m in inventory.loaded
        ],
        models_refreshed_utc=inventory.refreshed,
        models_error=inventory.error,
        models_dropped=inventory.dropped,
        dialect=inventory.dialect if backend.api_format == "OpenAI" else "",
    )


def pull_out(job: PullJob) -> PullOut:
    return PullOut(
        backend=job.backend,
        model=job.model,
        state=job.state,
        status=job.status,
        completed_bytes=job.completed,
        total_bytes=job.total,
        attempts=job.attempts,
        error=job.error,
        created_utc=job.created,
        updated_utc=job.updated,
        next_attempt_utc=job.next_attempt,
        layers={digest: LayerOut(completed=done, total=size) for digest, (done, size) in job.layers.items()},
    )


def cluster_models(monitor: Monitor, sync: Synchroniser) -> list[ModelOut]:
    names: dict[str, str] = {}
    available: dict[str, set[str]] = {}
    loaded: dict[str, list[LoadedOut]] = {}
    required: dict[str, set[str]] = {}
    for ident, inventory in monitor.inventory.items():
        for name in inventory.models:
            names.setdefault(model_key(name), name)
            available.setdefault(model_key(name), set()).add(ident)
        for model in inventory.loaded:
            names.setdefault(model_key(model.name), model.name)
            loaded.setdefault(model_key(model.name), []).append(
                LoadedOut(
                    backend=ident, name=model.name, expires_at=model.expires_at, size_vram=model.size_vram
                )
            )
    for ident, models in sync.required.items():
        for name in models:
            names.setdefault(model_key(name), name)
            required.setdefault(model_key(name), set()).add(ident)
    return [
        ModelOut(
            name=names[key],
            available_on=sorted(available.get(key, ())),
            loaded_on=sorted(loaded.get(key, []), key=lambda m: m.backend),
            required_on=sorted(required.get(key, ())),
            missing_on=sorted(required.get(key, set()) - available.get(key, set())),
        )
        for key in sorted(names)
    ]


@get(
    "/models",
    responses=error_responses(401, 503),
    tags=["Cluster"],
    summary="Every model in the cluster: which backends have it, have it loaded, require and lack it",
    sync_to_thread=False,
)
def list_models(monitor: NamedDependency[Monitor], sync: NamedDependency[Synchroniser]) -> list[ModelOut]:
    return cluster_models(monitor, sync)


@get(
    "/pulls",
    responses=error_responses(401, 503),
    tags=["Cluster"],
    summary="Model pulls and their progress",
    sync_to_thread=False,
)
def list_pulls(sync: NamedDependency[Synchroniser]) -> list[PullOut]:
    return [pull_out(job) for job in sorted(sync.jobs.values(), key=lambda j: (j.backend, j.model))]


@get(
    "/pulls/stream",
    responses=error_responses(401, 503),
    tags=["Cluster"],
    summary="Live pull progress as NDJSON: every current pull, then every change",
    media_type="application/x-ndjson",
    sync_to_thread=False,
)
def stream_pulls(sync: NamedDependency[Synchroniser]) -> Stream:
    events = sync.events()  # subscribe before reading the current state, so nothing falls between
    current = [pull_out(job) for job in sync.jobs.values()]
    encoder = msgspec.json.Encoder()

    async def lines() -> AsyncIterator[bytes]:
        for item in current:
            yield encoder.encode(item) + b"\n"
        async for job in events:
            yield encoder.encode(pull_out(job)) + b"\n"

    return Stream(lines(), media_type="application/x-ndjson", headers={"Cache-Control": "no-store"})
