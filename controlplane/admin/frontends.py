"""``/v1.0/frontends``: OllamaFlow's frontend routes, plus PATCH. Glue over FrontendService."""

from __future__ import annotations

from litestar import Controller, Response, delete, get, head, patch, put
from litestar.di import NamedDependency
from litestar.params import JSONBody

from controlplane.admin.routes import (
    CREATE_ERRORS,
    ITEM,
    ITEM_ERRORS,
    LIST_ERRORS,
    WRITE_ERRORS,
    PathId,
    exists_response,
)
from controlplane.admin.schemas import FrontendCreate, FrontendIn, FrontendOut, FrontendPatch
from controlplane.admin.service import FrontendService

__all__ = ["FrontendController"]

# Handler parameter type: the injected service.
Frontends = NamedDependency[FrontendService]


class FrontendController(Controller):
    path = "/frontends"
    tags = ["Frontends"]

    @get("/", responses=LIST_ERRORS, summary="List frontends, newest first")
    async def list_frontends(self, frontends: Frontends) -> list[FrontendOut]:
        return await frontends.list()

    @get(ITEM, responses=ITEM_ERRORS, summary="Read a frontend")
    async def get_frontend(self, frontends: Frontends, identifier: PathId) -> FrontendOut:
        return await frontends.get(identifier)

    @head(ITEM, responses=ITEM_ERRORS, summary="200 if the frontend exists, 404 if not")
    async def frontend_exists(self, frontends: Frontends, identifier: PathId) -> Response[None]:
        return exists_response(await frontends.exists(identifier))

    @put(
        "/",
        status_code=201,
        responses=CREATE_ERRORS,
        summary="Create a frontend (Identifier required; 409 if it exists)",
    )
    async def create_frontend(self, frontends: Frontends, data: JSONBody[FrontendCreate]) -> FrontendOut:
        return await frontends.create(data)

    @put(ITEM, responses=WRITE_ERRORS, summary="Replace a frontend: omitted fields take their defaults")
    async def replace_frontend(
        self,
        frontends: Frontends,
        identifier: PathId,
        data: JSONBody[FrontendIn],
    ) -> FrontendOut:
        return await frontends.replace(identifier, data)

    @patch(ITEM, responses=WRITE_ERRORS, summary="Change only the given fields of a frontend")
    async def patch_frontend(
        self,
        frontends: Frontends,
        identifier: PathId,
        data: JSONBody[FrontendPatch],
    ) -> FrontendOut:
        return await frontends.patch(identifier, data)

    @delete(ITEM, responses=ITEM_ERRORS, summary="Delete a frontend")
    async def delete_frontend(self, frontends: Frontends, identifier: PathId) -> None:
        await frontends.delete(identifier)
