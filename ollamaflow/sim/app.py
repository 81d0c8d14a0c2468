"""The simulator as one raw ASGI application: routing, error shapes, Ollama's host check."""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from ollamaflow.sim import control, ollama_create, ollama_infer, ollama_models, openai_api
from ollamaflow.sim.asgi import (
    JSON,
    OPENAI_JSON,
    TEXT,
    ApiError,
    ClientGone,
    Receive,
    Request,
    Send,
    read_body,
    send_body,
)
from ollamaflow.sim.config import SimConfig
from ollamaflow.sim.dialect import OLLAMA_V1, OPENAI, VLLM, Dialect
from ollamaflow.sim.state import SimState
from shared.wire import ollama as ollama_errors
from shared.wire import openai as openai_errors

__all__ = ["SimApp", "create_app"]

log = logging.getLogger("ollamaflow.sim")

Handler = Callable[[Request, SimState], Awaitable[None]]
Api = Literal["ollama", "openai", "sim"]

_MODEL_PREFIX = "/v1/models/"


@dataclass(frozen=True, slots=True)
class Route:
    handler: Handler
    api: Api


def _ollama_routes() -> dict[str, dict[str, Route]]:
    def r(handler: Handler) -> Route:
        return Route(handler, "ollama")

    return {
        "/": {"GET": r(ollama_models.root), "HEAD": r(ollama_models.root)},
        "/api/version": {"GET": r(ollama_models.version), "HEAD": r(ollama_models.version)},
        "/api/tags": {"GET": r(ollama_models.tags), "HEAD": r(ollama_models.tags)},
        "/api/ps": {"GET": r(ollama_models.ps)},
        "/api/show": {"POST": r(ollama_models.show)},
        "/api/pull": {"POST": r(ollama_models.pull)},
        "/api/delete": {"DELETE": r(ollama_models.delete)},
        "/api/copy": {"POST": r(ollama_models.copy)},
        "/api/create": {"POST": r(ollama_create.create)},
        "/api/push": {"POST": r(ollama_create.push)},
        "/api/generate": {"POST": r(ollama_infer.generate)},
        "/api/chat": {"POST": r(ollama_infer.chat)},
        "/api/embed": {"POST": r(ollama_infer.embed)},
        "/api/embeddings": {"POST": r(ollama_infer.embeddings)},
    }


def _openai_routes(dialect: Dialect) -> dict[str, dict[str, Route]]:
    def r(handler: Callable[[Request, SimState, Dialect], Awaitable[None]]) -> Route:
        return Route(functools.partial(handler, dialect=dialect), "openai")

    return {
        "/v1/chat/completions": {"POST": r(openai_api.chat_completions)},
        "/v1/completions": {"POST": r(openai_api.completions)},
        "/v1/embeddings": {"POST": r(openai_api.embeddings)},
        "/v1/models": {"GET": r(openai_api.list_models)},
    }


def _sim_routes() -> dict[str, dict[str, Route]]:
    return {
        "/_sim/stats": {"GET": Route(control.stats, "sim")},
        "/_sim/reset": {"POST": Route(control.reset, "sim")},
        "/_sim/config": {"GET": Route(control.get_config, "sim"), "POST": Route(control.set_config, "sim")},
    }


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SimApp:
    """ASGI entry point. Ollama mode serves /api/* and Ollama's /v1 layer; OpenAI mode only /v1/*."""

    def __init__(self, state: SimState) -> None:
        self.state = state
        ollama = state.config.format == "ollama"
        self._dialect = OLLAMA_V1 if ollama else VLLM if state.config.dialect == "vllm" else OPENAI
        self._routes = {
            **(_ollama_routes() if ollama else {}),
            **_openai_routes(self._dialect),
            **_sim_routes(),
        }
        self._get_model = Route(functools.partial(openai_api.get_model, dialect=self._dialect), "openai")
        blob = Route(ollama_create.blob, "ollama")
        self._blobs = {"HEAD": blob, "POST": blob} if ollama else None
        # Ollama bound to loopback refuses requests whose Host is not local (DNS-rebinding guard).
        self._check_host = ollama and _is_loopback(state.config.host)
        self._hostname = socket.gethostname().lower()
        self._hosts_seen: dict[bytes, bool] = {}
        key = state.config.api_key
        self._authorization = b"Bearer " + key.encode() if key else None

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await _lifespan(receive, send)

    async def _http(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        stats = self.state.stats
        counted = not path.startswith("/_sim/")  # the simulator's own routes stay out of the stats
        if counted:
            if self._check_host and not self._host_ok(scope["headers"]):
                await send_body(send, 403, None, b"")
                return
            if self._authorization is not None and not self._authorized(scope["headers"]):
                await self._unauthorized(send)
                return
        methods = self._routes.get(path)
        key = path
        if methods is None and path.startswith(_MODEL_PREFIX) and len(path) > len(_MODEL_PREFIX):
            methods, key = {"GET": self._get_model}, "/v1/models/{model}"
        elif methods is None and self._blobs is not None and path.startswith(ollama_create.BLOB_PREFIX):
            methods, key = self._blobs, "/api/blobs/{digest}"
        if counted:
            stats.count_request(key if methods is not None else "(unknown)")
        if methods is None:
            await self._not_found(scope, send)
            return
        route = methods.get(method)
        if route is None:
            await self._method_not_allowed(_route_api(methods), send)
            return
        try:
            body = await read_body(receive) if method in ("POST", "PUT", "DELETE", "PATCH") else b""
            await route.handler(Request(method, path, scope["headers"], body, receive, send), self.state)
        except ClientGone:
            stats.disconnects += 1
        except ApiError as error:
            await _render_error(send, route.api, error)
        except Exception:
            log.exception("simulator failed on %s %s", method, path)
            # If the reply had started this fails as well; the server then closes the connection.
            with contextlib.suppress(Exception):
                await _render_error(send, route.api, ApiError(500, "internal simulator error"))

    def _authorized(self, headers: list[tuple[bytes, bytes]]) -> bool:
        return any(name == b"authorization" and value == self._authorization for name, value in headers)

    async def _unauthorized(self, send: Send) -> None:
        if not self._dialect.ollama:
            error = ApiError(401, "Incorrect API key provided.", code="invalid_api_key")
            await _render_error(send, "openai", error)
        else:
            await _render_error(send, "ollama", ApiError(401, "unauthorized"))

    def _host_ok(self, headers: list[tuple[bytes, bytes]]) -> bool:
        host = next((value for name, value in headers if name == b"host"), b"")
        known = self._hosts_seen.get(host)
        if known is None:
            known = _allowed_host(host.decode("latin-1"), self._hostname)
            if len(self._hosts_seen) < 1024:
                self._hosts_seen[host] = known
        return known

    async def _not_found(self, scope: dict[str, Any], send: Send) -> None:
        path: str = scope["path"]
        if self._dialect is OLLAMA_V1 and path.endswith("/") and path[:-1] in self._routes:
            # gin redirects a trailing slash to the route without it.
            status = 301 if scope["method"] in ("GET", "HEAD") else 307
            query = scope.get("query_string", b"")
            location = path[:-1].encode() + (b"?" + query if query else b"")
            await send_body(send, status, None, b"", headers=[(b"location", location)])
        elif self._dialect is OLLAMA_V1 and not path.startswith(("/v1/", "/_sim/")):
            await send_body(send, 404, TEXT, b"404 page not found")
        else:
            await _render_error(send, "openai", ApiError(404, f"Not Found: {path}"))

    async def _method_not_allowed(self, api: Api, send: Send) -> None:
        if api == "ollama":
            await send_body(send, 405, TEXT, b"405 method not allowed")
        else:
            await _render_error(send, api, ApiError(405, "Method Not Allowed"))


def _route_api(methods: dict[str, Route]) -> Api:
    return next(iter(methods.values())).api


def _allowed_host(host_header: str, hostname: str) -> bool:
    host = host_header.lower()
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host[1:]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    if host in ("", "localhost", hostname):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host.endswith((".localhost", ".local", ".internal"))
    return address.is_loopback or address.is_private or address.is_unspecified


async def _render_error(send: Send, api: Api, error: ApiError) -> None:
    if api == "openai":
        body = openai_errors.error_body(error.message, error.status, code=error.code, param=error.param)
        await send_body(send, error.status, OPENAI_JSON, body)
    else:
        await send_body(send, error.status, JSON, ollama_errors.error_body(error.message))


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def create_app(config: SimConfig) -> SimApp:
    """A fresh simulator with its own state; ``app.state`` holds it (stats, knobs, models)."""
    return SimApp(SimState.create(config))
