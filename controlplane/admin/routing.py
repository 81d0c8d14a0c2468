"""``POST /v1.0/frontends/{id}/explain``: a routing dry-run, answered by one live data plane.

The control plane has no routing state of its own (load, sticky sessions and the strategies' rotation
live in the data planes), so it asks one data plane over the bus (``BusNames.explain_subject``, one
member of the data planes' queue group answers) what it would do with a request to this frontend, and
returns that answer. Nothing is sent to any backend.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Literal

import msgspec
from litestar import post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from msgspec import Meta

from controlplane.admin.schemas import Headers
from controlplane.admin.service import FrontendService
from controlplane.errors import ApiError, error_responses
from controlplane.reports import DataPlaneRegistry
from shared.bus import Bus
from shared.errors import BusError, BusNoResponder
from shared.wire.explain import ExplainRequest, decode_reply, encode

__all__ = ["ExplainCandidateOut", "ExplainIn", "ExplainOut", "explain_route"]

log = logging.getLogger("ollamaflow.controlplane.explain")

NO_RESPONDER_GRACE = 1.0
ANSWER_WAIT = 5.0
"""Seconds to wait for the data plane's answer."""


class ExplainIn(msgspec.Struct, kw_only=True, rename="pascal"):
    """The request to dry-run: what a client would send to the frontend."""

    model: Annotated[str, Meta(max_length=512, description="the model the request names")] = ""
    kind: Literal["completions", "embeddings"] = "completions"
    api_format: Literal["Ollama", "OpenAI"] = "Ollama"  # the client's API format
    headers: Headers = {}  # a backend's Headers' limits


class ExplainCandidateOut(msgspec.Struct, kw_only=True, rename="pascal"):
    """One backend of the frontend, as the data plane weighed it."""

    backend: str
    eligible: bool
    reason: str
    in_flight: int
    limit: int  # this data plane's share of the backend's MaxParallelRequests; 0: unlimited
    loaded: bool


class ExplainOut(msgspec.Struct, kw_only=True, rename="pascal"):
    """What the data plane would do. ``Order`` is the failover order, its first entry the choice;
    ``Status``/``Error`` say what the client would get when no backend can take the request."""

    dataplane: str
    revision: int
    status: int
    error: str
    frontend: str
    strategy: str
    sticky_key: str
    order: list[str]
    candidates: list[ExplainCandidateOut]


@post(
    "/frontends/{identifier:str}/explain",
    status_code=200,
    responses=error_responses(400, 401, 404, 503),
    tags=["Frontends"],
    summary="Dry-run the routing decision for a request to this frontend (asks one live data plane)",
)
async def explain_route(
    frontends: NamedDependency[FrontendService],
    registry: NamedDependency[DataPlaneRegistry],
    bus: NamedDependency[Bus],
    identifier: FromPath[str],
    data: JSONBody[ExplainIn],
) -> ExplainOut:
    frontend = await frontends.get(identifier)  # 404 if there is no such frontend
    if not registry.live_ids():
        raise ApiError(
            "ServiceUnavailable", "no live data plane to ask: start one, or wait for its first report"
        )
    request = ExplainRequest(
        host=frontend.hostname,
        kind=data.kind,
        api_format=data.api_format,
        model=data.model,
        # Header names are case-insensitive; the data planes compare them lower-case.
        headers={name.lower(): value for name, value in data.headers.items()},
    )
    try:
        answer = await _ask(bus, encode(request))
    except BusNoResponder:
        raise ApiError(
            "ServiceUnavailable", "no data plane answers routing dry-runs (are they older than this version?)"
        ) from None
    except BusError as exc:
        raise ApiError("ServiceUnavailable", f"no answer from a data plane: {exc}") from None
    try:
        reply = decode_reply(answer)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        log.warning("unreadable routing dry-run answer from a data plane: %s", exc)
        raise ApiError("ServiceUnavailable", "a data plane sent an unreadable answer; retry") from None
    return msgspec.convert(reply, ExplainOut, from_attributes=True)


async def _ask(bus: Bus, request: bytes) -> bytes:
    """One data plane's answer. A data plane reports itself live a moment before it answers dry-runs
    (it subscribes once connected), so "nobody answers" is asked again for ``NO_RESPONDER_GRACE``."""
    deadline = asyncio.get_running_loop().time() + NO_RESPONDER_GRACE
    while True:
        try:
            return await bus.request(bus.names.explain_subject, request, wait=ANSWER_WAIT)
        except BusNoResponder:
            if asyncio.get_running_loop().time() >= deadline:
                raise
            await asyncio.sleep(0.1)
