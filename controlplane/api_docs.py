"""The OpenAPI pages ``/schema/swagger`` and ``/schema/redoc``, served without any other host.

Litestar's render plugins load Swagger UI, Redoc, a favicon and fonts from CDNs by default, so the
pages stay blank on a machine without Internet access (and tell those CDNs who reads the docs). The
``openapi-ui-bundles`` package ships Swagger UI 5 (needed for the OpenAPI 3.1 Litestar writes) and
Redoc 2 (Redoc 3 does not start from a classic script tag); they are served from ``/schema/assets``.
"""

from __future__ import annotations

from litestar import Response, get
from litestar.datastructures import CacheControlHeader
from litestar.exceptions import NotFoundException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.plugins import OpenAPIRenderPlugin, RedocRenderPlugin, SwaggerRenderPlugin
from litestar.params import FromPath
from litestar.response import File
from openapi_ui_bundles import redoc, swagger_ui

__all__ = ["ASSETS", "docs_assets", "docs_pages"]

ASSETS = "/schema/assets"
_REDOC = "redoc.standalone.js"
_FAVICON = f"<link rel='icon' type='image/png' href='{ASSETS}/favicon-32x32.png'>"


def docs_pages() -> list[OpenAPIRenderPlugin]:
    """The render plugins of ``/schema/swagger`` and ``/schema/redoc``, pointing at local assets."""
    return [
        SwaggerRenderPlugin(
            path="/swagger",
            js_url=f"{ASSETS}/swagger-ui-bundle.js",
            css_url=f"{ASSETS}/swagger-ui.css",
            standalone_preset_js_url=f"{ASSETS}/swagger-ui-standalone-preset.js",
            favicon=_FAVICON,
        ),
        RedocRenderPlugin(path="/redoc", js_url=f"{ASSETS}/{_REDOC}", google_fonts=False, favicon=_FAVICON),
    ]


_FILES = {
    "swagger-ui-bundle.js": swagger_ui.static_path / "swagger-ui-bundle.js",
    "swagger-ui-standalone-preset.js": swagger_ui.static_path / "swagger-ui-standalone-preset.js",
    "swagger-ui.css": swagger_ui.static_path / "swagger-ui.css",
    "favicon-32x32.png": swagger_ui.static_path / "favicon-32x32.png",
    "logo-mini.svg": redoc.static_path / "logo-mini.svg",
}
"""Only what the pages load: the bundles' sample pages (which fetch a petstore from the Internet) stay
unserved."""

# Redoc 2's side menu shows Redocly's logo from their CDN; the bundle ships the same file.
_REDOC_LOGO = (b"https://cdn.redoc.ly/redoc/logo-mini.svg", f"{ASSETS}/logo-mini.svg".encode())


def docs_assets() -> HTTPRouteHandler:
    """The route of the static files those pages load, from the installed package (so they match its
    version); Redoc's script is read once, here, with its logo pointed at the local copy."""
    redoc_script = (redoc.static_path / _REDOC).read_bytes().replace(*_REDOC_LOGO)

    @get(
        f"{ASSETS}/{{name:str}}",
        include_in_schema=False,
        sync_to_thread=False,
        cache_control=CacheControlHeader(max_age=3600),
    )
    def docs_asset(name: FromPath[str]) -> File | Response[bytes]:
        if name == _REDOC:
            return Response(redoc_script, media_type="text/javascript; charset=utf-8")
        if (path := _FILES.get(name)) is None:
            raise NotFoundException(f"no docs asset {name}")
        return File(path, content_disposition_type="inline")

    return docs_asset
