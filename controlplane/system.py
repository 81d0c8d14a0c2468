"""Process probes outside the admin API, no token needed: ``/healthz`` (alive) and ``/readyz`` (ready)."""

from __future__ import annotations

from litestar import Response, get
from litestar.di import NamedDependency

from controlplane.lease import Lease
from controlplane.readiness import Readiness

__all__ = ["healthz", "readyz"]


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
