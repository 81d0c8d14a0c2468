"""The model-listing routes: /api/tags, /api/ps, /v1/models[/{id}] and /api/show.

Lists fan out to the matched frontend's active, healthy backends at once, each call bounded by a
short timeout: the snapshot knows model names but not the sizes, digests and details Ollama's
clients show, so the backends are asked. A backend that fails or is slow is left out (and logged);
the others still answer. Entries are converted between the formats by ``dataplane.translate.models``
and merged by ``dataplane.models.merge``. ``/api/show`` goes to one backend whose inventory (in the
snapshot) has the model; an OpenAI backend's answer is synthesised from its model list. Each answer
is read whole, up to ``LIST_BODY_LIMIT``: a larger one leaves its backend out of a list, or makes
/api/show a 502 naming the limit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import msgspec

from dataplane.http.headers import read_client_headers
from dataplane.http.incoming import BadRequest, BodyReader, ClientGone, Receive
from dataplane.http.paths import model_id, raw_path
from dataplane.http.request_context import new_id_header
from dataplane.http.responses import JSON, Send, send_bytes, send_error, send_failure, send_json
from dataplane.models.merge import Entry, find_entry, listed_entries, merge_unique, sort_by_expiry
from dataplane.routing.table import FrontendRoute, Target
from dataplane.state import SnapshotState
from dataplane.translate.models import ollama_show_body, ollama_tags_entries, openai_models_entries
from dataplane.upstream.transport import Transport, upstream_errors
from shared.errors import OllamaFlowError, UpstreamProtocolError, UpstreamTimeout
from shared.models import model_key
from shared.snapshot import ApiFormat, BackendView, Snapshot
from shared.wire import openai
from shared.wire.ollama import ModelRequest

__all__ = ["LIST_BODY_LIMIT", "LIST_TIMEOUT", "Listing"]

log = logging.getLogger("ollamaflow.dataplane.listing")

# Seconds one backend may take to answer a listing call before the list goes on without it.
LIST_TIMEOUT = 5.0
# The largest listing or /api/show answer read from one backend (a model list is a few KiB per model).
LIST_BODY_LIMIT = 16 * 1024 * 1024

OLLAMA_NAMES = ("model", "name")  # ollama-python reads "model"; older servers only set "name"
OPENAI_NAMES = ("id",)

Parse = Callable[[bytes], list[Entry]]


@dataclass(frozen=True, slots=True)
class _Member:
    """A backend a listing may ask: its snapshot view and its prepared upstream parts."""

    view: BackendView
    target: Target


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    content_type: bytes
    body: bytes


class Listing:
    """The listing handlers; built once at start-up over the data plane's state and upstream client."""

    def __init__(
        self,
        state: SnapshotState,
        upstream: Transport,
        *,
        bodies: BodyReader,
        timeout: float = LIST_TIMEOUT,
    ) -> None:
        self._bodies = bodies
        self._state = state
        self._upstream = upstream
        self._timeout = timeout
        self._prepared_for: Snapshot | None = None
        self._targets: dict[str, Target] = {}
        self._show_decoder = msgspec.json.Decoder(ModelRequest)

    # The routes

    async def tags(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        """GET|HEAD /api/tags: every backend's models, Ollama entries, each model once."""
        found = await self._matched(scope, send, "Ollama")
        if found is None:
            return
        route, id_header = found

        def plan(view: BackendView) -> tuple[bytes, Parse]:
            if view.api_format == "OpenAI":
                return b"/v1/models", lambda body: ollama_tags_entries(body, backend=view.id)
            return b"/api/tags", lambda body: listed_entries(body, key="models", name_fields=OLLAMA_NAMES)

        lists = await self._fan_out(route, plan, id_header[1])
        await send_json(send, 200, {"models": merge_unique(lists, OLLAMA_NAMES)}, [id_header])

    async def ps(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        """GET /api/ps: the models the Ollama backends hold in memory, longest-staying first."""
        found = await self._matched(scope, send, "Ollama")
        if found is None:
            return
        route, id_header = found

        def plan(view: BackendView) -> tuple[bytes, Parse] | None:
            if view.api_format == "OpenAI":
                return None  # nothing to unload or expire there
            return b"/api/ps", lambda body: listed_entries(body, key="models", name_fields=OLLAMA_NAMES)

        lists = await self._fan_out(route, plan, id_header[1])
        loaded = sort_by_expiry([entry for entries in lists for entry in entries])
        await send_json(send, 200, {"models": loaded}, [id_header])

    async def models(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        """GET /v1/models: OpenAI's list over every backend; ``data`` is ``[]``, never null."""
        found = await self._matched(scope, send, "OpenAI")
        if found is None:
            return
        route, id_header = found
        entries = await self._openai_entries(route, id_header[1])
        await send_json(send, 200, {"object": "list", "data": entries}, [id_header])

    async def model(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        """GET /v1/models/{id}: one entry of the list, or OpenAI's 404 with ``model_not_found``."""
        name = model_id(raw_path(scope))  # the rest of the path, "/" and ":" included
        if not name.strip("/"):
            await self.models(scope, receive, send)
            return
        found = await self._matched(scope, send, "OpenAI")
        if found is None:
            return
        route, id_header = found
        entry = find_entry(await self._openai_entries(route, id_header[1]), name, OPENAI_NAMES)
        if entry is None:
            message = f"The model '{name}' does not exist"
            body = openai.error_body(message, 404, code="model_not_found")
            await send_bytes(send, 404, body, JSON, [id_header])
            return
        await send_json(send, 200, entry, [id_header])

    async def show(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        """POST /api/show: asked of a backend that has the model; 404 when none has it."""
        found = await self._matched(scope, send, "Ollama")
        if found is None:
            return
        route, id_header = found
        try:
            client = read_client_headers(scope["headers"])
            body = await self._bodies.json(
                receive, client.content_length, route.frontend.max_request_body_size
            )
            name = self._show_name(body)
        except ClientGone:
            return
        except OllamaFlowError as exc:
            await send_failure(send, "Ollama", exc, [id_header])
            return
        key = model_key(name)
        listing = [m for m in self._members(route) if key in {model_key(n) for n in m.view.models}]
        # Backends whose inventory was never read might have it too: asked after those that list it.
        unknown = [m for m in self._members(route) if not m.view.models_known]
        failure: OllamaFlowError | None = None
        for member in [*listing, *unknown]:
            try:
                reply = await self._show_on(member, body, name, id_header[1], route.read_timeout)
            except (OllamaFlowError, TimeoutError) as exc:
                failure = self._as_error(member, exc)
                log.warning("show %r: %s", name, failure.logged)
                continue
            if reply is None:  # this backend does not have it after all
                continue
            headers = [member.target.backend_header, id_header]
            await send_bytes(send, reply.status, reply.body, reply.content_type, headers)
            return
        if failure is not None:  # a backend that may have it could not be asked
            await send_failure(send, "Ollama", failure, [id_header])
            return
        await send_error(send, "Ollama", 404, f"model '{name}' not found", [id_header])

    # Matching and fan-out

    async def _matched(
        self, scope: MutableMapping[str, Any], send: Send, api_format: ApiFormat
    ) -> tuple[FrontendRoute, tuple[bytes, bytes]] | None:
        """The frontend for the request's Host and the request id header; None once an error is sent."""
        id_header = new_id_header()
        try:
            host = read_client_headers(scope["headers"]).host
            return self._state.table.frontend_for(host), id_header
        except OllamaFlowError as exc:
            await send_failure(send, api_format, exc, [id_header])
            return None

    def _members(self, route: FrontendRoute) -> list[_Member]:
        """The frontend's active, healthy backends, in the frontend's order."""
        snapshot = self._state.snapshot
        if snapshot is None:
            return []
        if snapshot is not self._prepared_for:  # prepared once per snapshot, like the routing table
            self._targets = {b.id: Target.from_backend(b) for b in snapshot.content.backends}
            self._prepared_for = snapshot
        views = {b.id: b for b in snapshot.content.backends}
        return [
            _Member(views[i], self._targets[i])
            for i in route.frontend.backends
            if i in views and views[i].active and views[i].healthy
        ]

    async def _fan_out(
        self,
        route: FrontendRoute,
        plan: Callable[[BackendView], tuple[bytes, Parse] | None],
        request_id: bytes,
    ) -> list[list[Entry]]:
        """Each member's parsed list, asked concurrently; a failed or slow member gives ``[]``."""
        calls = []
        for member in self._members(route):
            step = plan(member.view)
            if step is not None:
                calls.append(self._list_one(member, *step, request_id))
        return list(await asyncio.gather(*calls))

    async def _list_one(self, member: _Member, path: bytes, parse: Parse, request_id: bytes) -> list[Entry]:
        try:
            async with asyncio.timeout(self._timeout):
                reply = await self._call(member, b"GET", path, b"", request_id, self._timeout)
            if reply.status != 200:
                raise UpstreamProtocolError(
                    f"backend {member.view.id} answered {path.decode()} with {reply.status}"
                )
            return parse(reply.body)
        except (OllamaFlowError, TimeoutError) as exc:
            log.warning("listing without backend %s: %s", member.view.id, self._as_error(member, exc).logged)
            return []

    async def _openai_entries(self, route: FrontendRoute, request_id: bytes) -> list[Entry]:
        def plan(view: BackendView) -> tuple[bytes, Parse]:
            if view.api_format == "OpenAI":
                return b"/v1/models", lambda body: listed_entries(body, key="data", name_fields=OPENAI_NAMES)
            return b"/api/tags", openai_models_entries

        return merge_unique(await self._fan_out(route, plan, request_id), OPENAI_NAMES)

    # One backend

    async def _call(
        self, member: _Member, method: bytes, path: bytes, body: bytes, request_id: bytes, read_timeout: float
    ) -> _Reply:
        """One whole request and answer; the connection is reused only after a complete answer."""
        lines = b"Accept: application/json\r\nX-OllamaFlow-Request: %s\r\n" % request_id
        if body:
            lines = b"Content-Type: application/json\r\n" + lines
        target = member.target
        head = target.head(method, path, b"", lines, len(body))
        response = await self._upstream.request(target.id, target.http.origin, head, body, read_timeout)
        try:
            with upstream_errors(target.id):
                data = await response.read(LIST_BODY_LIMIT)
        except BaseException:
            response.close()
            raise
        response.release()
        return _Reply(response.status, response.content_type or JSON, data)

    async def _show_on(
        self, member: _Member, body: bytes, name: str, request_id: bytes, read_timeout: float
    ) -> _Reply | None:
        """The backend's /api/show answer (None for its 404), synthesised for an OpenAI backend."""
        if member.view.api_format == "Ollama":
            reply = await self._call(member, b"POST", b"/api/show", body, request_id, read_timeout)
            return None if reply.status == 404 else reply
        async with asyncio.timeout(self._timeout):
            reply = await self._call(member, b"GET", b"/v1/models", b"", request_id, self._timeout)
        if reply.status != 200:
            raise UpstreamProtocolError(f"backend {member.view.id} answered /v1/models with {reply.status}")
        entry = find_entry(ollama_tags_entries(reply.body, backend=member.view.id), name, OLLAMA_NAMES)
        if entry is None:
            return None
        return _Reply(200, JSON, ollama_show_body(entry, capabilities=_capabilities(name)))

    def _as_error(self, member: _Member, exc: BaseException) -> OllamaFlowError:
        if isinstance(exc, OllamaFlowError):
            return exc
        return UpstreamTimeout(f"backend {member.view.id} did not answer within {self._timeout:g}s")

    def _show_name(self, body: bytes) -> str:
        if not body.strip():
            raise BadRequest("missing request body")
        try:
            request = self._show_decoder.decode(body)
        except msgspec.DecodeError as exc:  # ValidationError included
            raise BadRequest(f"invalid request body: {exc}") from None
        if not request.model_name.strip():
            raise BadRequest("model is required")
        return request.model_name


def _capabilities(name: str) -> list[str]:
    # An OpenAI model list says nothing about what a model does; embedding models are named so.
    return ["embedding"] if "embed" in name.lower() else ["completion"]
