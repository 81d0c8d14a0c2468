"""Model management through a frontend: /api/pull, /api/delete and /api/copy.

The data plane has no database, so it asks the control plane over the bus (``shared.wire.models``):
a pull adds the model to the frontend's RequiredModels and the control plane's synchroniser pulls it
onto every Ollama backend of the frontend that lacks it; a delete takes it out of RequiredModels and
off those backends; a copy copies it on the backends that have it. ``/api/pull`` subscribes to the
pull progress first, then asks, then streams Ollama's own progress lines aggregated over the backends
(``dataplane.models.pull_progress``) until each of them has the model. OpenAI-format backends cannot
pull, delete or copy and are left out. No control plane answering: 503.

Before the last byte, each action waits (briefly, bounded) until this data plane's snapshot shows the
change, so the client's next request is routed by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, MutableMapping
from typing import Any

import msgspec

from dataplane.http.headers import read_client_headers
from dataplane.http.incoming import BadRequest, BodyReader, ClientGone, Receive
from dataplane.http.request_context import new_id_header
from dataplane.http.responses import JSON, Send, send_bytes, send_error, send_failure, send_json
from dataplane.models.pull_progress import PullStream
from dataplane.routing.table import FrontendRoute
from dataplane.state import SnapshotState
from shared.bus import Bus
from shared.errors import BusError, BusNoResponder, OllamaFlowError
from shared.models import model_key
from shared.wire.models import ModelReply, ModelRequest, PullProgress, decode_progress, decode_reply, encode

__all__ = ["ModelManagement"]

log = logging.getLogger("ollamaflow.dataplane.manage")

NDJSON = b"application/x-ndjson"
# Seconds the control plane may take to answer (it writes the configuration and plans the pulls).
REQUEST_WAIT = 30.0
# A pull that sends no news for this long ends with an error (a pull may pause long between lines).
IDLE_LIMIT = 600.0
# The longest a reply waits for this data plane's snapshot to show the change.
SETTLE_WITHIN = 5.0


class _PullBody(msgspec.Struct, kw_only=True):
    model: str = ""
    name: str = ""  # the legacy spelling
    stream: bool | None = None


class _CopyBody(msgspec.Struct, kw_only=True):
    source: str = ""
    destination: str = ""


_encoder = msgspec.json.Encoder()


def _line(line: dict[str, Any]) -> bytes:
    return _encoder.encode(line) + b"\n"


def _decode(body: bytes, kind: type[Any]) -> Any:
    if not body.strip():
        raise BadRequest("missing request body")
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.DecodeError as exc:  # ValidationError included
        raise BadRequest(f"invalid request body: {exc}") from None


class ModelManagement:
    """The handlers; built once at start-up over the data plane's state and bus."""

    def __init__(
        self,
        state: SnapshotState,
        bus: Bus,
        *,
        bodies: BodyReader,
        request_wait: float = REQUEST_WAIT,
        idle_limit: float = IDLE_LIMIT,
        settle_within: float = SETTLE_WITHIN,
    ) -> None:
        self._bodies = bodies
        self._state = state
        self._bus = bus
        self._request_wait = request_wait
        self._idle_limit = idle_limit
        self._settle_within = settle_within

    # The routes

    async def pull(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        """POST /api/pull: progress until every Ollama backend of the frontend has the model."""
        id_header = new_id_header()
        try:
            route, request, model = await self._read_model(scope, receive)
        except ClientGone:
            return
        except OllamaFlowError as exc:
            await send_failure(send, "Ollama", exc, [id_header])
            return
        updates: asyncio.Queue[PullProgress] = asyncio.Queue()
        key = model_key(model)

        async def on_update(data: bytes) -> None:
            with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                update = decode_progress(data)
                if model_key(update.model) == key:
                    updates.put_nowait(update)

        ask = ModelRequest(action="pull", frontend_id=route.frontend.id, model=model)
        try:
            # Subscribed before asking, so that no update falls between the answer and the stream.
            stop = await self._bus.subscribe(self._bus.names.pulls_subject, on_update)
        except BusError as exc:
            await send_error(send, "Ollama", 503, f"cannot pull now: {exc.message}", [id_header])
            return
        try:
            reply = await self._ask(ask, send, id_header)
            if reply is None:
                return
            stream = PullStream(model)
            lines = stream.begin(reply)
            if request.stream is False:
                await self._follow(stream, updates, receive, None)
                await self._settle(stream.settled, model, listed=True)
                status = 500 if "error" in stream.last else 200
                await send_json(send, status, stream.last, [id_header])
                return
            start = {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", NDJSON), id_header],
            }
            await send(start)
            await self._follow(stream, updates, receive, send, first=lines)
        except ClientGone:
            log.debug("pull of %s: the client went away (the control plane goes on pulling)", model)
        finally:
            await stop()

    async def delete(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        """DELETE /api/delete: off RequiredModels and off the frontend's Ollama backends."""
        id_header = new_id_header()
        try:
            route, _, model = await self._read_model(scope, receive)
        except ClientGone:
            return
        except OllamaFlowError as exc:
            await send_failure(send, "Ollama", exc, [id_header])
            return
        reply = await self._ask(
            ModelRequest(action="delete", frontend_id=route.frontend.id, model=model), send, id_header
        )
        if reply is None:
            return
        await self._settle(reply.backends, model, listed=False)
        await send_bytes(send, 200, b"", JSON, [id_header])

    async def copy(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        """POST /api/copy: on each Ollama backend of the frontend that has the source."""
        id_header = new_id_header()
        try:
            route, body = await self._read(scope, receive)
            request: _CopyBody = _decode(body, _CopyBody)
            if not request.source.strip() or not request.destination.strip():
                raise BadRequest("source and destination are required")
        except ClientGone:
            return
        except OllamaFlowError as exc:
            await send_failure(send, "Ollama", exc, [id_header])
            return
        ask = ModelRequest(
            action="copy",
            frontend_id=route.frontend.id,
            model=request.source,
            destination=request.destination,
        )
        reply = await self._ask(ask, send, id_header)
        if reply is None:
            return
        await self._settle(reply.backends, request.destination, listed=True)
        await send_bytes(send, 200, b"", JSON, [id_header])

    async def refresh(self, frontend_id: str, backend: str, model: str) -> None:
        """Ask the control plane to read ``backend``'s models now, and wait until ``model`` shows."""
        ask = ModelRequest(action="refresh", frontend_id=frontend_id, backend=backend)
        try:
            await self._bus.request(self._bus.names.models_subject, encode(ask), wait=self._request_wait)
        except BusError as exc:
            log.warning("cannot ask for a refresh of backend %s: %s", backend, exc.message)
            return
        await self._settle([backend], model, listed=True)

    # Helpers

    async def _read(self, scope: MutableMapping[str, Any], receive: Receive) -> tuple[FrontendRoute, bytes]:
        client = read_client_headers(scope["headers"])
        route = self._state.table.frontend_for(client.host)
        body = await self._bodies.json(receive, client.content_length, route.frontend.max_request_body_size)
        return route, body

    async def _read_model(
        self, scope: MutableMapping[str, Any], receive: Receive
    ) -> tuple[FrontendRoute, _PullBody, str]:
        """The frontend, the body of a pull or delete, and the model it names (required)."""
        route, body = await self._read(scope, receive)
        request: _PullBody = _decode(body, _PullBody)
        model = (request.model or request.name).strip()
        if not model:
            raise BadRequest("model is required")
        return route, request, model

    async def _ask(
        self, request: ModelRequest, send: Send, id_header: tuple[bytes, bytes]
    ) -> ModelReply | None:
        """The control plane's answer; None once an error has been sent to the client.

        What went wrong in detail stays in the log; the client gets a generic message naming its
        request id (the control plane logs its own failures under the same id)."""
        request_id = id_header[1].decode()
        request = msgspec.structs.replace(request, request_id=request_id)
        try:
            data = await self._bus.request(
                self._bus.names.models_subject, encode(request), wait=self._request_wait
            )
            reply = decode_reply(data)
        except BusNoResponder:
            message = f"cannot {request.action} models now: no control plane answers"
            await send_error(send, "Ollama", 503, message, [id_header])
            return None
        except BusError as exc:
            log.warning("request %s: asking the control plane failed: %s", request_id, exc.message)
            message = (
                f"cannot {request.action} models now: no answer from the control plane (request {request_id})"
            )
            await send_error(send, "Ollama", 503, message, [id_header])
            return None
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning("request %s: unreadable answer from the control plane: %s", request_id, exc)
            message = f"unreadable answer from the control plane (request {request_id})"
            await send_error(send, "Ollama", 502, message, [id_header])
            return None
        if reply.status != 200:
            await send_error(send, "Ollama", reply.status, reply.error, [id_header])
            return None
        return reply

    async def _follow(
        self,
        stream: PullStream,
        updates: asyncio.Queue[PullProgress],
        receive: Receive,
        send: Send | None,
        first: Iterable[dict[str, Any]] = (),
    ) -> None:
        """Feed updates to ``stream`` until it finishes, writing its lines if ``send`` is given."""
        gone = asyncio.ensure_future(_disconnected(receive))
        pending = list(first)
        try:
            while True:
                if send is not None and pending:
                    if stream.finished:  # the last lines: the client's next request must route by it
                        await self._settle(stream.settled, stream.model, listed=True)
                    body = b"".join(_line(line) for line in pending)
                    await send({"type": "http.response.body", "body": body, "more_body": not stream.finished})
                if stream.finished:
                    return
                update = await _next(updates, gone, self._idle_limit)
                if update is None:
                    pending = stream.fail(f"no progress pulling {stream.model} for {self._idle_limit:g} s")
                else:
                    pending = stream.update(update)
        finally:
            gone.cancel()

    async def _settle(self, backends: Iterable[str], model: str, *, listed: bool) -> None:
        """Wait (at most ``settle_within``) until the snapshot shows ``model`` on (or off) ``backends``."""
        wanted = set(backends)
        if not wanted:
            return
        key = model_key(model)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settle_within
        while loop.time() < deadline:
            snapshot = self._state.snapshot
            if snapshot is not None:
                views = [b for b in snapshot.content.backends if b.id in wanted]
                if all((key in {model_key(n) for n in b.models}) == listed for b in views):
                    return
            await asyncio.sleep(0.05)


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _next(
    updates: asyncio.Queue[PullProgress], gone: asyncio.Future[None], idle: float
) -> PullProgress | None:
    """The next update; None after ``idle`` seconds without one; ClientGone if the client left."""
    if not updates.empty():
        return updates.get_nowait()
    getter = asyncio.ensure_future(updates.get())
    try:
        done, _ = await asyncio.wait({getter, gone}, timeout=idle, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not getter.done():
            getter.cancel()
    if getter in done:
        return getter.result()
    if gone in done:
        raise ClientGone
    return None
