"""Outside the admin API, no token needed: ``/`` (what this is and where its parts are), ``/healthz``
(alive) and ``/readyz`` (ready)."""

from __future__ import annotations

from litestar import Response, get, route
from litestar.di import NamedDependency
from litestar.handlers import HTTPRouteHandler

from controlplane.lease import Lease
from controlplane.readiness import Readiness

__all__ = ["healthz", "readyz", "service_root"]


def service_root(version: str) -> HTTPRouteHandler:
    """``GET /``: names the service and where its parts are. Web UIs probe it (without a token)
    before they offer a sign-in, so it answers 200 with a body whatever the state of the cluster."""
    body = {
        "service": "OllamaFlow control plane",
        "version": version,
        "admin_api": "/v1.0",
        "openapi": "/schema/openapi.json",
        "docs": "/schema/swagger",
        "console": "/console",
        "health": "/healthz",
        "ready": "/readyz",
    }

    @route(
        "/",
        http_method=["GET", "HEAD"],
        tags=["System"],
        summary="The service's name, version and where the admin API and its docs are",
        sync_to_thread=False,
    )
    def root() -> dict[str, str]:
        return body

    return root


@get("/healthz", tags=["System"], summary="200 while the process runs", sync_to_thread=False)
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get(
    "/readyz",
    tags=["System"],
    summary="200 when the database answers and NATS is connected; says which replica leads",
)
async def readyz(
    readiness: NamedDependency[Readiness], lease: NamedDependency[Lease]
) -> Response[dict[str, str]]:
    status, detail = await readiness.check()
    leader = lease.leader.holder if lease.leader is not None else ""
    body = {"status": status, "replica": lease.holder, "role": _role(lease), "leader": leader}
    if status == "ok":
        return Response(body, status_code=200)
    return Response(body | {"detail": detail}, status_code=503)


def _role(lease: Lease) -> str:
    return "leader" if lease.is_leader else "follower"
