"""Process probes outside the admin API, no token needed: ``/healthz`` (alive) and ``/readyz`` (ready)."""

from __future__ import annotations

from litestar import Response, get
from litestar.di import NamedDependency

from controlplane.readiness import Readiness

__all__ = ["healthz", "readyz"]


@get("/healthz", tags=["System"], summary="200 while the process runs", sync_to_thread=False)
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz", tags=["System"], summary="200 when the database answers and NATS is connected")
async def readyz(readiness: NamedDependency[Readiness]) -> Response[dict[str, str]]:
    status, detail = await readiness.check()
    if status == "ok":
        return Response({"status": status}, status_code=200)
    return Response({"status": status, "detail": detail}, status_code=503)
