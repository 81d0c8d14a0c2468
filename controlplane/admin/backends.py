"""``/v1.0/backends``: OllamaFlow's backend routes (health included), plus PATCH. Glue over BackendService.

BearerToken is write-only: responses carry HasBearerToken instead.
"""

from __future__ import annotations

from litestar import Controller, Response, delete, get, head, patch, put
from litestar.di import NamedDependency
from litestar.params import JSONBody

from controlplane.admin.health import BackendHealthOut, active_requests, backend_health
from controlplane.admin.routes import CREATE_ERRORS, ITEM, ITEM_ERRORS, LIST_ERRORS, PathId, exists_response
from controlplane.admin.schemas import BackendCreate, BackendIn, BackendOut, BackendPatch
from controlplane.admin.service import BackendService
from controlplane.clock import Clock
from controlplane.errors import error_responses
from controlplane.health.monitor import Monitor
from controlplane.reports import DataPlaneRegistry

__all__ = ["BackendController"]

# Handler parameter types: the injected services.
Backends = NamedDependency[BackendService]
Monitors = NamedDependency[Monitor]
Clocks = NamedDependency[Clock]
Registry = NamedDependency[DataPlaneRegistry]

_DELETE = error_responses(400, 401, 404, 409, 503)  # 409 InUse


class BackendController(Controller):
    path = "/backends"
    tags = ["Backends"]

    @get("/", responses=LIST_ERRORS, summary="List backends, newest first")
    async def list_backends(self, backends: Backends) -> list[BackendOut]:
        return await backends.list()

    @get("/health", responses=LIST_ERRORS, summary="Every backend with its health, uptime and models")
    async def list_health(
        self, backends: Backends, monitor: Monitors, clock: Clocks, registry: Registry
    ) -> list[BackendHealthOut]:
        in_flight, ejections = active_requests(registry), registry.ejections()
        return [backend_health(b, monitor, clock, in_flight, ejections) for b in await backends.list()]

    @get(ITEM + "/health", responses=ITEM_ERRORS, summary="One backend with its health, uptime and models")
    async def get_health(
        self, backends: Backends, monitor: Monitors, clock: Clocks, registry: Registry, identifier: PathId
    ) -> BackendHealthOut:
        backend = await backends.get(identifier)
        return backend_health(backend, monitor, clock, active_requests(registry), registry.ejections())

    @get(ITEM, responses=ITEM_ERRORS, summary="Read a backend")
    async def get_backend(self, backends: Backends, identifier: PathId) -> BackendOut:
        return await backends.get(identifier)

    @head(ITEM, responses=ITEM_ERRORS, summary="200 if the backend exists, 404 if not")
    async def backend_exists(self, backends: Backends, identifier: PathId) -> Response[None]:
        return exists_response(await backends.exists(identifier))

    @put(
        "/",
        status_code=201,
        responses=CREATE_ERRORS,
        summary="Create a backend (Identifier required; 409 if it exists)",
    )
    async def create_backend(self, backends: Backends, data: JSONBody[BackendCreate]) -> BackendOut:
        return await backends.create(data)

    @put(
        ITEM,
        responses=ITEM_ERRORS,
        summary="Replace a backend: omitted fields take their defaults (an omitted BearerToken is kept)",
    )
    async def replace_backend(
        self, backends: Backends, identifier: PathId, data: JSONBody[BackendIn]
    ) -> BackendOut:
        return await backends.replace(identifier, data)

    @patch(ITEM, responses=ITEM_ERRORS, summary="Change only the given fields of a backend")
    async def patch_backend(
        self,
        backends: Backends,
        identifier: PathId,
        data: JSONBody[BackendPatch],
    ) -> BackendOut:
        return await backends.patch(identifier, data)

    @delete(ITEM, responses=_DELETE, summary="Delete a backend (409 InUse while a frontend lists it)")
    async def delete_backend(self, backends: Backends, identifier: PathId) -> None:
        await backends.delete(identifier)
