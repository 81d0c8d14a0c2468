"""``/v1.0/dataplanes`` and ``/v1.0/snapshot``: what OllamaFlow lacks, a view of the running cluster."""

from __future__ import annotations

import contextlib
from datetime import datetime

import msgspec
from litestar import Response, get
from litestar.datastructures import ResponseHeader
from litestar.di import NamedDependency

from controlplane.admin.secrets import REDACTED, redact_headers, redact_querystring
from controlplane.errors import ApiError, error_responses
from controlplane.publish.publisher import PublishStatus
from controlplane.reports import DataPlaneRegistry, Sighting
from shared.bus import Bus
from shared.errors import BusError, SnapshotRejected
from shared.secret_box import BackendSecrets, Keyring, SealError, open_secrets
from shared.snapshot import BackendView, Snapshot, SnapshotContent, decode

__all__ = ["PUBLISH_ERROR_HEADER", "DataPlaneOut", "SnapshotOut", "current_snapshot", "list_dataplanes"]

# On ``/v1.0/dataplanes`` while publishing fails (also when no data plane is listed): why.
PUBLISH_ERROR_HEADER = "X-OllamaFlow-Publish-Error"


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
    published_revision: int  # the revision on the bus at the leader's last publish (0: none yet)
    publish_error: str  # why the leader's last publish failed ("" when it worked)


class SnapshotOut(msgspec.Struct, kw_only=True, rename="pascal"):
    """The snapshot the data planes read, with backend secrets and the digests of API keys and admin
    tokens redacted: a backend's ``bearer_token`` and ``sealed_secrets`` are "<redacted>" when set, its
    ``headers`` and ``querystring`` show names only, each value "<redacted>".

    ``Content`` is shown exactly as on the bus (the snapshot schema's own snake_case names).
    """

    schema: int
    revision: int
    content_hash: str
    generated_at: str
    # The id of the key that signed it ("" if unsigned): after a key rotation, the new key's id.
    signing_key_id: str = ""
    content: SnapshotContent


def _dataplane_out(registry: DataPlaneRegistry, sighting: Sighting, publisher: PublishStatus) -> DataPlaneOut:
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
        published_revision=publisher.revision,
        publish_error=publisher.last_error,
    )


def _redacted_backend(backend: BackendView, keyring: Keyring) -> BackendView:
    """``backend`` with its secrets shown as names only: sealed ones are opened (when this control
    plane holds their key) to list the header and parameter names, and the sealed text is hidden too."""
    secrets = BackendSecrets(
        bearer_token=backend.bearer_token, querystring=backend.querystring, headers=dict(backend.headers)
    )
    if backend.sealed_secrets:
        with contextlib.suppress(SealError):  # not ours to open: show no names
            secrets = open_secrets(keyring, backend.id, backend.sealed_secrets)
    if not secrets and not backend.sealed_secrets:
        return backend
    return msgspec.structs.replace(
        backend,
        bearer_token=REDACTED if secrets.bearer_token else None,
        headers=redact_headers(secrets.headers),
        querystring=redact_querystring(secrets.querystring),
        sealed_secrets=REDACTED if backend.sealed_secrets else "",
    )


def _redacted(snapshot: Snapshot, keyring: Keyring) -> SnapshotOut:
    backends = tuple(_redacted_backend(b, keyring) for b in snapshot.content.backends)
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
    response_headers=[
        ResponseHeader(
            name=PUBLISH_ERROR_HEADER,
            description="Present while the control plane cannot publish the snapshot: why.",
            documentation_only=True,
        )
    ],
    sync_to_thread=False,
)
def list_dataplanes(
    registry: NamedDependency[DataPlaneRegistry], publisher: NamedDependency[PublishStatus]
) -> Response[list[DataPlaneOut]]:
    planes = [_dataplane_out(registry, s, publisher) for s in registry.sightings()]
    # A header too, so that an empty list still says it (ASCII only: reasons are log-style text).
    error = "".join(c if c.isprintable() and c.isascii() else "?" for c in publisher.last_error[:500])
    return Response(planes, headers={PUBLISH_ERROR_HEADER: error} if error else None)


@get(
    "/snapshot",
    responses=error_responses(401, 404, 503),
    tags=["Cluster"],
    summary="The snapshot on the bus now (backend secrets and digests redacted)",
)
async def current_snapshot(bus: NamedDependency[Bus], secrets: NamedDependency[Keyring]) -> SnapshotOut:
    try:
        stored = await bus.read_snapshot()
    except BusError:
        raise ApiError("ServiceUnavailable", "NATS is unavailable, so the snapshot cannot be read") from None
    except SnapshotRejected as exc:
        raise ApiError("InternalError", f"the stored snapshot is unreadable: {exc}") from None
    if stored is None:
        raise ApiError("NotFound", "no snapshot has been published yet")
    try:
        return _redacted(decode(stored[0]), secrets)
    except SnapshotRejected as exc:
        raise ApiError("InternalError", f"the stored snapshot is unreadable: {exc}") from None
