"""``GET /console`` (the page) and ``/console/assets/...`` (its CSS and scripts), without a token.

The page holds no data: everything it shows comes from the admin API with the token the user enters,
so serving it to anyone gives nothing away. Every answer carries a Content-Security-Policy that
admits this origin only (no inline script or style, no other host, no framing), so the console makes
no request outside the control plane even if a value it shows were crafted to try.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from litestar import Response, Router, get
from litestar.datastructures import CacheControlHeader, MutableScopeHeaders
from litestar.static_files import create_static_files_router
from litestar.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONSOLE_POLICY", "console_routes"]

STATIC = Path(str(files("controlplane.console") / "static"))

CONSOLE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS = {
    "Content-Security-Policy": CONSOLE_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

# Revalidated at each load, so that a control plane upgraded in place serves the new
# console at the next reload.
_REVALIDATE = CacheControlHeader(no_cache=True)


def _with_security_headers(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableScopeHeaders.from_message(message)
                for name, value in _HEADERS.items():
                    headers[name] = value
            await send(message)

        await app(scope, receive, send_with_headers)

    return middleware


def console_routes() -> Router:
    """The console's routes, for the control plane's app. The page is read once, here."""
    page = (STATIC / "index.html").read_bytes()

    @get(["/console", "/console/"], include_in_schema=False, sync_to_thread=False, cache_control=_REVALIDATE)
    def console_page() -> Response[bytes]:
        return Response(page, media_type="text/html; charset=utf-8")

    assets = create_static_files_router(
        "/console/assets",
        directories=[STATIC],
        name="console-assets",
        cache_control=_REVALIDATE,
    )
    return Router("/", route_handlers=[console_page, assets], middleware=[_with_security_headers])
