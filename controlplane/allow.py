"""``Allow`` on OPTIONS answers lists every method of the path.

Litestar answers OPTIONS itself, but when several handlers share a path (``GET /frontends`` and
``PUT /frontends``) its answer lists only the methods of the handlers registered first. This
middleware puts the methods of the whole route into the header; 405 answers already carry them
(``controlplane.errors`` passes Litestar's header on).
"""

from __future__ import annotations

from litestar.datastructures import MutableScopeHeaders
from litestar.routes import HTTPRoute
from litestar.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["complete_allow"]


def _methods(scope: Scope) -> str | None:
    handler = scope.get("route_handler")
    for route in scope["litestar_app"].routes:
        if isinstance(route, HTTPRoute) and handler in route.route_handlers:
            return ", ".join(sorted(route.methods))
    return None


def complete_allow(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "OPTIONS":
            await app(scope, receive, send)
            return

        async def send_with_allow(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableScopeHeaders.from_message(message)
                if "allow" in headers and (methods := _methods(scope)) is not None:
                    headers["Allow"] = methods
            await send(message)

        await app(scope, receive, send_with_allow)

    return middleware
