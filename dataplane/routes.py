"""The data plane's route table: each path, its methods, its handler and what it asks of access.

Each path has its API format, so its errors come out in the shape its clients parse. Proxied paths
name the kind of request they carry. Each route also names what it asks of the frontend's access
settings (``dataplane.limits.access``): the app runs those checks before the handler, and only when
they can refuse something (model management, a frontend requiring API keys somewhere, or an HTTP/1.0
request).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from dataplane.http.incoming import Receive
from dataplane.http.paths import BLOB_PREFIX, MODEL_PREFIX
from dataplane.http.responses import Send
from dataplane.limits.access import Guard
from dataplane.parts import DataPlaneParts
from dataplane.probes import Probes
from dataplane.proxy.handler import Endpoint
from dataplane.routing.table import RequestKind
from shared.snapshot import ApiFormat

__all__ = ["PROXIED", "Handler", "Route", "route_table"]

Handler = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]

PROXIED = (
    Endpoint("/api/generate", RequestKind.COMPLETIONS, "Ollama"),
    Endpoint("/api/chat", RequestKind.COMPLETIONS, "Ollama"),
    Endpoint("/api/embed", RequestKind.EMBEDDINGS, "Ollama"),
    Endpoint("/api/embeddings", RequestKind.EMBEDDINGS, "Ollama"),
    Endpoint("/v1/chat/completions", RequestKind.COMPLETIONS, "OpenAI"),
    Endpoint("/v1/completions", RequestKind.COMPLETIONS, "OpenAI"),
    Endpoint("/v1/embeddings", RequestKind.EMBEDDINGS, "OpenAI"),
)


@dataclass(frozen=True, slots=True)
class Route:
    methods: frozenset[str]
    handler: Handler
    api_format: ApiFormat = "Ollama"
    guard: Guard | None = None  # None: the data plane's own probes, open to all
    # Its answers may take a while: a drain that times out ends them (dataplane.drain), knowing what
    # went out from a wrapped ``send``, or from the handler itself (``own_answer``: the proxy, whose
    # hot path is not wrapped). Instant answers need neither.
    endable: bool = False
    own_answer: bool = False


def route_table(parts: DataPlaneParts) -> dict[str, Route]:
    """Every path the data plane answers; ``MODEL_PREFIX`` and ``BLOB_PREFIX`` stand for the paths
    they begin (the model id or the digest follows)."""
    get_head, get, post = frozenset({"GET", "HEAD"}), frozenset({"GET"}), frozenset({"POST"})
    probe, serve, manages = Guard.PROTOCOL, Guard.SERVE, Guard.MANAGE
    probes = Probes(parts)
    routes = {
        "/": Route(get_head, probes.root, guard=probe),
        "/api/version": Route(get_head, probes.version, guard=probe),
        "/healthz": Route(get_head, probes.healthz),
        "/readyz": Route(get_head, probes.readyz),
    }
    if parts.exposition is not None and not parts.settings.dataplane_metrics_port:
        # The data plane's own path, like /healthz: no client API uses it, and it answers
        # whatever the Host (frontends are matched by Host only on the proxied paths).
        routes["/metrics"] = Route(get_head, probes.metrics)
    for endpoint in PROXIED:
        handler = functools.partial(parts.proxy.handle, endpoint=endpoint)
        route = Route(post, handler, endpoint.api_format, serve, endable=True, own_answer=True)
        routes[endpoint.path] = route
    listing = parts.listing
    routes["/api/tags"] = Route(get_head, listing.tags, guard=serve, endable=True)
    routes["/api/ps"] = Route(get, listing.ps, guard=serve, endable=True)
    routes["/api/show"] = Route(post, listing.show, guard=serve, endable=True)
    routes["/v1/models"] = Route(get, listing.models, "OpenAI", serve, endable=True)
    routes[MODEL_PREFIX] = Route(get, listing.model, "OpenAI", serve, endable=True)
    manage, authoring = parts.manage, parts.authoring
    routes["/api/pull"] = Route(post, manage.pull, guard=manages, endable=True)
    routes["/api/delete"] = Route(frozenset({"DELETE"}), manage.delete, guard=manages, endable=True)
    routes["/api/copy"] = Route(post, manage.copy, guard=manages, endable=True)
    routes["/api/create"] = Route(post, authoring.create, guard=manages, endable=True)
    routes["/api/push"] = Route(post, authoring.push, guard=manages, endable=True)
    routes[BLOB_PREFIX] = Route(frozenset({"HEAD", "POST"}), authoring.blob, guard=manages, endable=True)
    return routes
