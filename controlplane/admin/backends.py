"""``/v1.0/backends``: OllamaFlow's backend routes (health included), plus PATCH. Glue over BackendService.

BearerToken is write-only: responses carry HasBearerToken instead.
"""

from __future__ import annotations

from litestar import Controller, MediaType, Response, delete, get, head, patch, put
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from controlplane.admin.health import BackendHealthOut, active_requests, backend_health
from controlplane.admin.schemas import BackendIn, BackendOut, BackendPatch
from controlplane.admin.service import BackendService
from controlplane.clock import Clock
from controlplane.errors import error_responses
from controlplane.health.monitor import Monitor
from controlplane.reports import DataPlaneRegistry

__all__ = ["BackendController"]

_ID = "/{identifier:str}"

# Handler parameter types: the injected service and the id from the URL.
Backends = NamedDependency[BackendService]
Monitors = NamedDependency[Monitor]
Clocks = NamedDependency[Clock]
Registry = NamedDependency[DataPlaneRegistry]
PathId = FromPath[str]

_LIST = error_responses(401, 503)
_ONE = error_responses(400, 401, 404, 503)
_CREATE = error_responses(400, 401, 409, 503)
_WRITE = error_responses(400, 401, 404, 503)
_DELETE = error_responses(400, 401, 404, 409, 503)


class BackendController(Controller):
    path = "/backends"
    tags = ["Backends"]

    @get("/", responses=_LIST, summary="List backends, newest first")
    async def list_backends(self, backends: Backends) -> list[BackendOut]:
        return await backends.list()

    @get("/health", responses=_LIST, summary="Every backend with its health, uptime and models")
    async def list_health(
        self, backends: Backends, monitor: Monitors, clock: Clocks, registry: Registry
    ) -> list[BackendHealthOut]:
        in_flight, ejections = active_requests(registry), registry.ejections()
        return [backend_health(b, monitor, clock, in_flight, ejections) for b in await backends.list()]

    @get(_ID + "/health", responses=_ONE, summary="One backend with its health, uptime and models")
    async def get_health(
        self, backends: Backends, monitor: Monitors, clock: Clocks, registry: Registry, identifier: PathId
    ) -> BackendHealthOut:
        backend = await backends.get(identifier)
        return backend_health(backend, monitor, clock, active_requests(registry), registry.ejections())

    @get(_ID, responses=_ONE, summary="Read a backend")
    async def get_backend(self, backends: Backends, identifier: PathId) -> BackendOut:
        return await backends.get(identifier)

    @head(_ID, responses=_ONE, summary="200 if the backend exists, 404 if not")
    async def backend_exists(self, backends: Backends, identifier: PathId) -> Response[None]:
        found = await backends.exists(identifier)
        return Response(b"", status_code=200 if found else 404, media_type=MediaType.JSON)

    @put(
        "/",
        status_code=201,
        responses=_CREATE,
        summary="Create a backend (Identifier required; 409 if it exists)",
    )
    async def create_backend(self, backends: Backends, data: JSONBody[BackendIn]) -> BackendOut:
        return await backends.create(data)

    @put(
        _ID,
        responses=_WRITE,
        summary="Replace a backend: omitted fields take their defaults (an omitted BearerToken is kept)",
    )
    async def replace_backend(
        self, backends: Backends, identifier: PathId, data: JSONBody[BackendIn]
    ) -> BackendOut:
        return await backends.replace(identifier, data)

    @patch(_ID, responses=_WRITE, summary="Change only the given fields of a backend")
    async def patch_backend(
        self,
        backends: Backends,
        identifier: PathId,
        data: JSONBody[BackendPatch],
    ) -> BackendOut:
        return await backends.patch(identifier, data)

    @delete(_ID, responses=_DELETE, summary="Delete a backend (409 InUse while a frontend lists it)")
    async def delete_backend(self, backends: Backends, identifier: PathId) -> None:
        await backends.delete(identifier)
