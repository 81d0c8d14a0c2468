"""What the routes of every admin resource (frontends, backends, API keys) share: the item path, the
error answers each kind of route documents, and the HEAD answer."""

from __future__ import annotations

from litestar import MediaType, Response
from litestar.params import FromPath

from controlplane.errors import error_responses

__all__ = ["CREATE_ERRORS", "ITEM", "ITEM_ERRORS", "LIST_ERRORS", "WRITE_ERRORS", "PathId", "exists_response"]

ITEM = "/{identifier:str}"
PathId = FromPath[str]  # the id from the URL, as a handler parameter type

LIST_ERRORS = error_responses(401, 503)
ITEM_ERRORS = error_responses(400, 401, 404, 503)  # read, replace, patch or delete one item
# Replace or patch where the body may name other resources or take a unique value (409).
WRITE_ERRORS = error_responses(400, 401, 404, 409, 503)
CREATE_ERRORS = error_responses(400, 401, 409, 503)


def exists_response(found: bool) -> Response[None]:
    """HEAD of an item: 200 if it exists, 404 if not, without a body."""
    return Response(b"", status_code=200 if found else 404, media_type=MediaType.JSON)
