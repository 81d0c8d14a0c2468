"""``/v1.0/frontends``: OllamaFlow's frontend routes, plus PATCH. Glue over FrontendService."""

from __future__ import annotations

from litestar import Controller, MediaType, Response, delete, get, head, patch, put
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from controlplane.admin.schemas import FrontendIn, FrontendOut, FrontendPatch
from controlplane.admin.service import FrontendService
from controlplane.errors import error_responses

__all__ = ["FrontendController"]

_ID = "/{identifier:str}"

# Handler parameter types: the injected service and the id from the URL.
Frontends = NamedDependency[FrontendService]
PathId = FromPath[str]

_LIST = error_responses(401, 503)
_ONE = error_responses(400, 401, 404, 503)
_CREATE = error_responses(400, 401, 409, 503)
_WRITE = error_responses(400, 401, 404, 503)
_DELETE = error_responses(400, 401, 404, 503)


class FrontendController(Controller):
    path = "/frontends"
    tags = ["Frontends"]

    @get("/", responses=_LIST, summary="List frontends, newest first")
    async def list_frontends(self, frontends: Frontends) -> list[FrontendOut]:
        return await frontends.list()

    @get(_ID, responses=_ONE, summary="Read a frontend")
    async def get_frontend(self, frontends: Frontends, identifier: PathId) -> FrontendOut:
        return await frontends.get(identifier)

    @head(_ID, responses=_ONE, summary="200 if the frontend exists, 404 if not")
    async def frontend_exists(self, frontends: Frontends, identifier: PathId) -> Response[None]:
        found = await frontends.exists(identifier)
        return Response(b"", status_code=200 if found else 404, media_type=MediaType.JSON)

    @put(
        "/",
        status_code=201,
        responses=_CREATE,
        summary="Create a frontend (Identifier required; 409 if it exists)",
    )
    async def create_frontend(self, frontends: Frontends, data: JSONBody[FrontendIn]) -> FrontendOut:
        return await frontends.create(data)

    @put(_ID, responses=_WRITE, summary="Replace a frontend: omitted fields take their defaults")
    async def replace_frontend(
        self,
        frontends: Frontends,
        identifier: PathId,
        data: JSONBody[FrontendIn],
    ) -> FrontendOut:
        return await frontends.replace(identifier, data)

    @patch(_ID, responses=_WRITE, summary="Change only the given fields of a frontend")
    async def patch_frontend(
        self,
        frontends: Frontends,
        identifier: PathId,
        data: JSONBody[FrontendPatch],
    ) -> FrontendOut:
        return await frontends.patch(identifier, data)

    @delete(_ID, responses=_DELETE, summary="Delete a frontend")
    async def delete_frontend(self, frontends: Frontends, identifier: PathId) -> None:
        await frontends.delete(identifier)
