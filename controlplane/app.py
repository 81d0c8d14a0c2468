"""``create_app()``: the control plane's Litestar application.

Routes: the admin API under ``/v1.0`` (bearer token required), ``/`` (what this is), ``/healthz`` and
``/readyz``, the OpenAPI schema with its docs pages under ``/schema`` (``/schema/swagger``,
``/schema/redoc``, ``/schema/openapi.json``; their scripts served from here too), and the web console
at ``/console`` (the page needs no token; the data it shows comes from the admin API with the token
the user enters). With ``OLLAMAFLOW_CORS_ORIGINS`` set, browser pages on those origins may call all
of it: Litestar's CORS layer answers preflights before routing and guards, so an ``OPTIONS`` needs no
token (the request that follows does).
The views of what the leader observes (backend health, models, pulls), and starting a pull, answer 503
naming the leader on a replica that does not lead.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from litestar import Litestar, Router, route
from litestar.config.cors import CORSConfig
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.params import FromPath

from controlplane.admin.apikeys import ApiKeyController
from controlplane.admin.backends import BackendController
from controlplane.admin.cluster import current_snapshot, list_dataplanes
from controlplane.admin.frontends import FrontendController
from controlplane.admin.health import list_models, list_pulls, stream_pulls
from controlplane.admin.leadership import cluster_view, not_leader
from controlplane.admin.openapi import publish_exact_schemas
from controlplane.admin.pulls import start_pull
from controlplane.admin.routing import explain_route
from controlplane.admin.strict import strict_json_body
from controlplane.allow import complete_allow
from controlplane.api_docs import docs_assets, docs_pages
from controlplane.auth import admin_guard, on_loop
from controlplane.clock import Clock
from controlplane.console.routes import console_routes
from controlplane.errors import ApiError, exception_handlers
from controlplane.health.monitor import Monitor
from controlplane.metrics import metrics_parts
from controlplane.models_requests import ModelRequests
from controlplane.runtime import ControlPlane
from controlplane.settings import Settings
from controlplane.sync.manager import Synchroniser
from controlplane.system import healthz, readyz, service_root

__all__ = ["create_app"]

_ALL_METHODS = ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"]
# What a page may send besides the CORS-safelisted headers, and read besides the safelisted ones.
CORS_REQUEST_HEADERS = ["authorization", "content-type", "x-request-id"]
CORS_EXPOSED_HEADERS = ["X-OllamaFlow-Publish-Error", "Allow"]


@route(["/", "/{path:path}"], http_method=_ALL_METHODS, include_in_schema=False, sync_to_thread=False)
def _unknown_admin_route(path: FromPath[str] = "") -> None:
    # So that unknown /v1.0 paths also demand a token before saying 404.
    raise ApiError("NotFound", f"no admin route /v1.0{path}")


def _version() -> str:
    try:
        return version("ollamaflow")
    except PackageNotFoundError:
        return "0.0.0"


def _leaders_monitor(plane: ControlPlane) -> Monitor:
    if (monitor := plane.monitor) is None:
        raise not_leader(plane.lease, "backend health")
    return monitor


def _leaders_sync(plane: ControlPlane) -> Synchroniser:
    if (sync := plane.sync) is None:
        raise not_leader(plane.lease, "the model pulls")
    return sync


def _leaders_model_requests(plane: ControlPlane) -> ModelRequests:
    if (models := plane.models) is None:
        raise not_leader(plane.lease, "the model pulls")
    return models


def cors_config(settings: Settings) -> CORSConfig | None:
    """Litestar's CORS layer for ``OLLAMAFLOW_CORS_ORIGINS``; None (no CORS headers) without origins.
    No credentials mode: the admin token travels in ``Authorization``, never in a cookie."""
    if not settings.cors_origins:
        return None
    return CORSConfig(
        allow_origins=list(settings.cors_origins),
        allow_methods=_ALL_METHODS,  # type: ignore[arg-type]
        allow_headers=CORS_REQUEST_HEADERS,  # lower case: Litestar compares the browser's names so
        expose_headers=CORS_EXPOSED_HEADERS,
        allow_credentials=False,
        max_age=600,
    )


def create_app(settings: Settings, *, clock: Clock | None = None) -> Litestar:
    """Build a control plane for ``settings`` and the app that serves it."""
    plane = ControlPlane(settings, clock=clock)
    config_routes = Router(
        "/",
        route_handlers=[FrontendController, BackendController, ApiKeyController, explain_route, start_pull],
        guards=[on_loop(plane.readiness.guard())],
    )
    admin = Router(
        "/v1.0",
        route_handlers=[
            config_routes,
            list_dataplanes,
            current_snapshot,
            cluster_view,
            list_models,
            list_pulls,
            stream_pulls,
            _unknown_admin_route,
        ],
        guards=[admin_guard(settings.admin_tokens)],
        before_request=strict_json_body,
        security=[{"BearerToken": []}],
    )
    observed = metrics_parts(plane, settings)  # Prometheus /metrics (controlplane.metrics)
    app = Litestar(
        route_handlers=[
            admin,
            service_root(_version()),
            healthz,
            readyz,
            console_routes(),
            docs_assets(),
            *observed.routes,
        ],
        cors_config=cors_config(settings),
        dependencies={
            "frontends": Provide(lambda: plane.frontends, sync_to_thread=False),
            "backends": Provide(lambda: plane.backends, sync_to_thread=False),
            "apikeys": Provide(lambda: plane.apikeys, sync_to_thread=False),
            "registry": Provide(lambda: plane.registry, sync_to_thread=False),
            "bus": Provide(lambda: plane.bus, sync_to_thread=False),
            "secrets": Provide(lambda: settings.secrets, sync_to_thread=False),
            "readiness": Provide(lambda: plane.readiness, sync_to_thread=False),
            "publisher": Provide(lambda: plane.publish_status, sync_to_thread=False),
            "monitor": Provide(lambda: _leaders_monitor(plane), sync_to_thread=False),
            "sync": Provide(lambda: _leaders_sync(plane), sync_to_thread=False),
            "model_requests": Provide(lambda: _leaders_model_requests(plane), sync_to_thread=False),
            "lease": Provide(lambda: plane.lease, sync_to_thread=False),
            "clock": Provide(lambda: plane.clock, sync_to_thread=False),
        },
        lifespan=[plane.lifespan, *observed.lifespans],
        exception_handlers=exception_handlers(),
        middleware=[complete_allow, *observed.middleware],
        openapi_config=OpenAPIConfig(
            title="OllamaFlow control plane",
            version=_version(),
            description="OllamaFlow-compatible admin API (PascalCase JSON), plus PATCH, client API keys, "
            "data planes, the published snapshot and routing dry-runs.",
            path="/schema",
            render_plugins=docs_pages(),
            components=Components(
                security_schemes={"BearerToken": SecurityScheme(type="http", scheme="bearer")}
            ),
        ),
        logging_config=None,
    )
    app.state.plane = plane
    publish_exact_schemas(app)
    return app
