"""``POST /v1.0/frontends/{id}/pull``: an admin pulls a model onto a frontend's backends.

The same pull a data plane's ``/api/pull`` asks for (``ModelRequests``): onto each active, healthy
Ollama backend of the frontend that lacks the model, added to RequiredModels only where the frontend's
PullAddsRequiredModels is true (else held until each pull ends). The admin token may manage models on
any frontend, so AllowModelManagement is not checked; the other rules hold. The answer says at once
which backends pull, which already have the model and which were left out (OpenAI-format ones);
``/v1.0/pulls/stream`` shows the progress. Only the leader runs pulls: another replica answers 503
naming it (``controlplane.admin.leadership``).
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from msgspec import Meta

from controlplane.admin import limits
from controlplane.admin.health import PullOut, pull_out
from controlplane.admin.limits import whole
from controlplane.admin.routes import ITEM, PathId
from controlplane.errors import ApiError, error_responses
from controlplane.models_requests import ModelRequests
from controlplane.sync.manager import Synchroniser
from shared.models import model_key

__all__ = ["PullIn", "PullStarted", "start_pull"]

# ModelRequests' refusals, as admin API errors. Its 403 (the pulled model would be removed again at
# once) is a conflict with the frontend's and the control plane's settings for an admin.
_KINDS = {400: "BadRequest", 403: "Conflict", 404: "NotFound", 503: "ServiceUnavailable"}


# A model name with something in it besides white space (as the schema says, so that clients know).
PullModel = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=limits.MODEL_NAME_LENGTH,
        pattern=whole(rf"[^\x00]*[^{limits.NO_SPACE}][^\x00]*"),
        description="the model to pull: a name that is not blank",
    ),
]


class PullIn(msgspec.Struct, kw_only=True, rename="pascal", forbid_unknown_fields=True):
    """What to pull."""

    model: PullModel


class PullStarted(msgspec.Struct, kw_only=True, rename="pascal"):
    """Where the pull goes: follow the ``Pulling`` backends on ``/v1.0/pulls/stream``."""

    frontend: str
    model: str
    pulling: list[str]
    """Backends pulling it now (or whose pull of it already ended: see /v1.0/pulls)."""
    present: list[str]
    """Backends that have it already."""
    skipped: list[str]
    """Active backends of the frontend that cannot pull (OpenAI-format)."""
    jobs: list[PullOut]
    """The pulls onto the ``Pulling`` backends right after starting. A line of /v1.0/pulls/stream
    with an older CreatedUtc for the same backend and model is from an earlier pull."""


@post(
    "/frontends" + ITEM + "/pull",
    status_code=202,
    responses=error_responses(400, 401, 404, 409, 503),
    tags=["Frontends"],
    summary="Pull a model onto the frontend's Ollama backends that lack it (progress: /v1.0/pulls/stream)",
    description="404: no such frontend, or only OpenAI-format backends and none serves the model. "
    "409: PullAddsRequiredModels is false while OLLAMAFLOW_SYNC_REMOVE_UNREQUIRED is on (the model "
    "would be removed again). 503: not the leading replica, or no healthy Ollama backend can pull now.",
)
async def start_pull(
    model_requests: NamedDependency[ModelRequests],
    sync: NamedDependency[Synchroniser],
    identifier: PathId,
    data: JSONBody[PullIn],
) -> PullStarted:
    model = data.model.strip()
    if not model:
        raise ApiError.bad_request("Model: must not be blank")
    reply = await model_requests.admin_pull(identifier, model)
    if reply.status != 200:
        raise ApiError(_KINDS.get(reply.status, "InternalError"), reply.error)
    pulling = [ident for ident in reply.backends if ident not in reply.present]
    jobs = [sync.jobs.get((ident, model_key(model))) for ident in pulling]
    return PullStarted(
        frontend=identifier,
        model=model,
        pulling=pulling,
        present=list(reply.present),
        skipped=list(reply.skipped),
        jobs=[pull_out(job) for job in jobs if job is not None],
    )
