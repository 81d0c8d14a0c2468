"""Model authoring through a frontend: /api/create, /api/push and HEAD|POST /api/blobs/:digest.

Blobs live on one server, and the create that names them must reach that same server, so all of
these go to ONE backend chosen deterministically: the first active, healthy Ollama backend in the
frontend's backend order (the same one for every request while the health of the backends stays
the same). Bodies stream both ways unbuffered (blob uploads can be many GB; the frontend's
MaxRequestBodySize still applies; a create's or push's JSON body also stays within the data plane's
JSON cap); the upstream leg uses httpx, as everything off the hot path does, with the backends' TLS
policy (``shared.tls``) and no proxy from the environment.
After a create that succeeded, the control plane is asked to read that backend's models at once, and
the answer's last byte waits (briefly) until this data plane's snapshot lists the new model.
OpenAI-format backends cannot do any of this: a frontend with only those answers 501.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import httpx
import msgspec

from dataplane.http.disconnect import DisconnectGuard, DisconnectWatch
from dataplane.http.headers import ClientHeaders, read_client_headers, response_headers
from dataplane.http.incoming import (
    BodyReader,
    BodyTimeout,
    BodyTooLarge,
    ClientGone,
    Receive,
    frontend_limit,
)
from dataplane.http.paths import BLOB_PREFIX, blob_digest, raw_path
from dataplane.http.request_context import new_id_header, running_task
from dataplane.http.responses import Send, send_error, send_failure
from dataplane.http.stream_framing import error_tail, framing_of
from dataplane.models.manage import ModelManagement
from dataplane.proxy.client_stream import ClientStream
from dataplane.routing.table import FrontendRoute, Target
from dataplane.state import SnapshotState
from dataplane.translate.errors import unsupported_operation
from shared.errors import NoBackendAvailable, OllamaFlowError
from shared.snapshot import BackendView

__all__ = ["Authoring"]

log = logging.getLogger("ollamaflow.dataplane.manage")


class _CreateBody(msgspec.Struct, kw_only=True):
    model: str = ""
    name: str = ""


def author_backend(route: FrontendRoute, backends: dict[str, BackendView], operation: str) -> BackendView:
    """The one backend that takes a frontend's blobs, creates and pushes."""
    others = []
    for ident in route.frontend.backends:
        view = backends.get(ident)
        if view is None or not view.active:
            continue
        if view.api_format != "Ollama":
            others.append(view)
        elif view.healthy:
            return view
    if others and len(others) == sum(1 for i in route.frontend.backends if i in backends):
        raise unsupported_operation(operation, others[0].name or others[0].id)
    raise NoBackendAvailable(f"no healthy Ollama backend in frontend {route.frontend.id!r}")


class Authoring:
    """The handlers; ``start`` and ``close`` bracket the upstream client's life."""

    def __init__(
        self,
        state: SnapshotState,
        management: ModelManagement,
        *,
        connect_timeout: float,
        bodies: BodyReader,
        ssl_context: ssl.SSLContext,
    ) -> None:
        self._bodies = bodies
        self._state = state
        self._ssl = ssl_context
        self._management = management
        self._connect_timeout = connect_timeout
        self._client: httpx.AsyncClient | None = None
        self._watch = DisconnectWatch()  # only to build guards: they are started at once here

    async def start(self) -> None:
        # Backends are reached directly: HTTP(S)_PROXY and friends are not read (trust_env).
        self._client = httpx.AsyncClient(follow_redirects=False, trust_env=False, verify=self._ssl)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def create(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        await self._proxy(scope, receive, send, "/api/create", whole_body=True)

    async def push(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        await self._proxy(scope, receive, send, "/api/push")

    async def blob(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        digest = blob_digest(raw_path(scope))
        if digest is None:
            message = "invalid blob digest: expected 'sha256:' followed by 64 hexadecimal digits"
            request_id = new_id_header()
            await send_error(send, "Ollama", 400, message, [request_id])
            return
        await self._proxy(scope, receive, send, BLOB_PREFIX + digest)

    async def _proxy(
        self,
        scope: MutableMapping[str, Any],
        receive: Receive,
        send: Send,
        backend_path: str,
        *,
        whole_body: bool = False,
    ) -> None:
        """Forward to the frontend's authoring backend at ``backend_path``, a fixed path (plus a
        checked digest): nothing of the client's path reaches the backend."""
        id_header = new_id_header()
        try:
            client = read_client_headers(scope["headers"])
            route = self._state.table.frontend_for(client.host)
            snapshot = self._state.snapshot
            backends = {b.id: b for b in snapshot.content.backends} if snapshot is not None else {}
            operation = BLOB_PREFIX.rstrip("/") if backend_path.startswith(BLOB_PREFIX) else backend_path
            view = author_backend(route, backends, operation)
            frontend_max = route.frontend.max_request_body_size
            created = ""
            if whole_body:  # a create is small, and its model name is needed afterwards
                body: bytes | AsyncIterator[bytes] = await self._bodies.json(
                    receive, client.content_length, frontend_max
                )
                created = _created_name(body)
            elif scope["method"] == "HEAD":
                body = b""
            else:  # a push's JSON, or a blob bounded only by the frontend's limit
                blob = scope["path"].startswith(BLOB_PREFIX)
                limit = frontend_limit(frontend_max) if blob else self._bodies.json_limit(frontend_max)
                body = self._bodies.stream(receive, client.content_length, limit)
        except ClientGone:
            return
        except OllamaFlowError as exc:
            await send_failure(send, "Ollama", exc, [id_header])
            return
        target = Target.from_backend(view)
        try:
            request = self._request(
                scope, backend_path, client, target, view, body, id_header[1], route.read_timeout
            )
        except (httpx.InvalidURL, ValueError) as exc:  # e.g. a query string no URL can hold
            log.debug("%s %s: cannot forward the request: %s", scope["method"], backend_path, exc)
            await send_error(send, "Ollama", 400, "invalid request: cannot be forwarded", [id_header])
            return
        assert self._client is not None
        try:
            response = await self._client.send(request, stream=True)
        except ClientGone:
            return
        except (BodyTooLarge, BodyTimeout) as exc:  # raised by the client's body as it streamed up
            await send_failure(send, "Ollama", exc, [id_header])
            return
        except httpx.HTTPError as exc:
            request_id = id_header[1].decode()
            log.warning(
                "request %s: %s %s to backend %s failed: %s: %s",
                request_id, scope["method"], backend_path, view.id, type(exc).__name__, exc,
            )  # fmt: skip
            timed_out = isinstance(exc, httpx.TimeoutException)
            what = "did not answer in time" if timed_out else "could not be reached or failed"
            message = f"backend {view.id} {what} (request {request_id})"  # the details are in the log
            await send_error(send, "Ollama", 504 if timed_out else 502, message, [id_header])
            return
        headers = response_headers(response.headers.raw, (target.backend_header, id_header))
        task = running_task()
        # The request body is all sent: from now on ``receive`` only says whether the client left,
        # and then the upstream request is dropped (Ollama stops a create or push whose client is gone).
        guard = DisconnectGuard(receive, task, self._watch)
        guard.start()
        stream = ClientStream(send, guard, "Ollama")
        last = b""
        try:
            await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
            # The latest chunk is held back: with a Content-Length the client is done once it has
            # every byte, and a create's refresh must come before that.
            async for chunk in response.aiter_raw():
                if chunk:
                    if last:
                        await send({"type": "http.response.body", "body": last, "more_body": True})
                    last = chunk
            if created and response.status_code == 200:
                await self._management.refresh(route.frontend.id, view.id, created)
            await stream.finish({"type": "http.response.body", "body": last})
        except httpx.HTTPError as exc:
            log.warning("%s %s: backend %s broke off: %s", scope["method"], backend_path, view.id, exc)
            message = f"backend {view.id} broke off (request {id_header[1].decode()})"
            framing = framing_of(response.headers.get("content-type", "").encode("latin-1"))
            # None: no way to say it in-band; the body ends short and the client sees it.
            tail = error_tail(framing, message, after=last) or b""
            await stream.finish({"type": "http.response.body", "body": last + tail})
        except asyncio.CancelledError:
            if not guard.client_gone:
                raise
            task.uncancel()
            log.debug("%s %s: the client went away; upstream request dropped", scope["method"], backend_path)
        finally:
            guard.close()
            await response.aclose()

    def _request(
        self,
        scope: MutableMapping[str, Any],
        backend_path: str,
        client: ClientHeaders,
        target: Target,
        view: BackendView,
        body: bytes | AsyncIterator[bytes],
        request_id: bytes,
        read_timeout: float,
    ) -> httpx.Request:
        query = "&".join(q for q in (scope["query_string"].decode("latin-1"), view.querystring or "") if q)
        url = target.base_url + backend_path + ("?" + query.lstrip("?") if query else "")
        # Bytes as received: a client's header value may hold any Latin-1 byte, which httpx would
        # refuse to encode from text.
        headers = [(name, value) for name, value in client.forward if name not in target.header_names]
        own = target.headers
        headers += [(k.encode("latin-1", "replace"), v.encode("latin-1", "replace")) for k, v in own]
        headers.append((b"X-OllamaFlow-Request", request_id))
        if not any(name == b"accept-encoding" for name, _ in client.forward):
            # Relayed raw: no encoding the client did not ask for.
            headers.append((b"Accept-Encoding", b"identity"))
        if isinstance(body, bytes):
            if scope["method"] != "HEAD":
                headers.append((b"Content-Length", b"%d" % len(body)))
        elif client.content_length is not None:
            headers.append((b"Content-Length", b"%d" % client.content_length))  # no chunking of a known size
        timeout = httpx.Timeout(self._connect_timeout, read=max(read_timeout, 60.0), write=None, pool=None)
        assert self._client is not None
        return self._client.build_request(
            scope["method"], url, headers=headers, content=body, timeout=timeout
        )


def _created_name(body: bytes) -> str:
    try:
        request = msgspec.json.decode(body, type=_CreateBody)
    except msgspec.DecodeError:  # the backend says what is wrong with it
        return ""
    return (request.model or request.name).strip()
