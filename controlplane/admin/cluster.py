"""``/v1.0/dataplanes`` and ``/v1.0/snapshot``: what OllamaFlow lacks, a view of the running cluster."""

from __future__ import annotations

from datetime import datetime

import msgspec
from litestar import get
from litestar.di import NamedDependency

from controlplane.errors import ApiError, error_responses
from controlplane.reports import DataPlaneRegistry, Sighting
from shared.bus import Bus
from shared.errors import BusError, SnapshotRejected
from shared.snapshot import Snapshot, SnapshotContent, decode

__all__ = ["DataPlaneOut", "SnapshotOut", "current_snapshot", "list_dataplanes"]

REDACTED = "<redacted>"


class DataPlaneOut(msgspec.Struct, kw_only=True, rename="pascal"):
    """A data plane heard from: its last report, when it came, and whether it still counts as live."""

    id: str
    applied_revision: int
    snapshot_error: str
    address: str
    version: str
    in_flight: dict[str, int]
    queued: dict[str, int]  # backend id -> requests waiting in this data plane that could go to it
    rejected_total: int  # requests turned away because a queue was full or a wait expired
    ejected: dict[str, str]  # backend id -> why this data plane's circuit breaker stopped using it
    requests_total: int
    client_errors: dict[str, int]  # clients this data plane refused since start, by kind
    started_at: str
    last_seen_utc: datetime
    live: bool
    draining: bool  # stopping: takes no new connections, finishes what it runs; its shares went to others
    stopped: bool  # said goodbye after its drain (so no longer live)


class SnapshotOut(msgspec.Struct, kw_only=True, rename="pascal"):
    """The snapshot the data planes read, with backend bearer tokens and the digests of API keys and
    admin tokens redacted.

    ``Content`` is shown exactly as on the bus (the snapshot schema's own snake_case names).
    """

    schema: int
    revision: int
    content_hash: str
    generated_at: str
    # The id of the key that signed it ("" if unsigned): after a key rotation, the new key's id.
    signing_key_id: str = ""
    content: SnapshotContent


def _dataplane_out(registry: DataPlaneRegistry, sighting: Sighting) -> DataPlaneOut:
    report = sighting.report
    return DataPlaneOut(
        id=report.id,
        applied_revision=report.applied_revision,
        snapshot_error=report.snapshot_error,
        address=report.address,
        version=report.version,
        in_flight=dict(report.in_flight),
        queued=dict(report.queued),
        rejected_total=report.rejected_total,
        ejected=dict(report.ejected),
        requests_total=report.requests_total,
        client_errors=dict(report.client_errors),
        started_at=report.started_at,
        last_seen_utc=sighting.seen_at,
        live=registry.is_live(sighting),
        draining=report.draining,
        stopped=report.stopped,
    )


def _redacted(snapshot: Snapshot) -> SnapshotOut:
    backends = tuple(
        msgspec.structs.replace(b, bearer_token=REDACTED) if b.bearer_token else b
        for b in snapshot.content.backends
    )
    content = snapshot.content
    keys = tuple(msgspec.structs.replace(k, digest=REDACTED) for k in content.api_keys)
    admins = tuple(REDACTED for _ in content.cluster.admin_token_digests)
    cluster = msgspec.structs.replace(content.cluster, admin_token_digests=admins)
    return SnapshotOut(
        schema=snapshot.schema,
        revision=snapshot.revision,
        content_hash=snapshot.content_hash,
        generated_at=snapshot.generated_at,
        signing_key_id=snapshot.signature.key_id if snapshot.signature is not None else "",
        content=msgspec.structs.replace(content, backends=backends, api_keys=keys, cluster=cluster),
    )


@get(
    "/dataplanes",
    responses=error_responses(401),
    tags=["Cluster"],
    summary="Data planes heard from, with the revision each applied",
    sync_to_thread=False,
)
def list_dataplanes(registry: NamedDependency[DataPlaneRegistry]) -> list[DataPlaneOut]:
    return [_dataplane_out(registry, s) for s in registry.sightings()]


@get(
    "/snapshot",
    responses=error_responses(401, 404, 503),
    tags=["Cluster"],
    summary="The snapshot on the bus now (bearer tokens and digests redacted)",
)
async def current_snapshot(bus: NamedDependency[Bus]) -> SnapshotOut:
    try:
        stored = await bus.read_snapshot()
    except BusError:
        raise ApiError("ServiceUnavailable", "NATS is unavailable, so the snapshot cannot be read") from None
    if stored is None:
        raise ApiError("NotFound", "no snapshot has been published yet")
    try:
        return _redacted(decode(stored[0]))
    except SnapshotRejected as exc:
        raise ApiError("InternalError", f"the stored snapshot is unreadable: {exc}") from None
