"""The published OpenAPI schema describes bodies exactly as msgspec decodes them.

Litestar's schema generator drops what msgspec enforces inside containers: the length and pattern of
a list's items (``Backends``, ``Labels``), the size of a map and its keys' and values' limits
(``Headers``), ``maxProperties``. A client that trusts the schema then sends values the API refuses.
msgspec writes the JSON Schema of its own types, so each component schema of a msgspec Struct is
replaced by msgspec's, keeping Litestar's paths and component names.
"""

from __future__ import annotations

import typing
from typing import Any

import msgspec
from litestar import Litestar
from litestar.routes import HTTPRoute

from controlplane.admin.limits import JSON_VALUE, JSON_VALUE_SCHEMA

__all__ = ["publish_exact_schemas"]

_REFS = "#/components/schemas/{name}"


def _structs(annotation: Any, found: set[type[msgspec.Struct]]) -> None:
    """The msgspec Structs named in ``annotation`` (a handler's parameter or return type)."""
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        found.add(annotation)
    for argument in typing.get_args(annotation):
        _structs(argument, found)


def _handler_structs(app: Litestar) -> list[type[msgspec.Struct]]:
    found: set[type[msgspec.Struct]] = set()
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            if not handler.include_in_schema:
                continue
            signature = handler.parsed_fn_signature
            _structs(signature.return_type.annotation, found)
            for parameter in signature.parameters.values():
                _structs(parameter.annotation, found)
    return sorted(found, key=lambda struct: struct.__name__)


def _any_value(annotation: Any) -> dict[str, Any]:
    """``object`` is any JSON value (e.g. pinned properties in the published snapshot)."""
    if annotation is object:
        return {"description": "any JSON value"}
    raise NotImplementedError(f"no JSON schema for {annotation!r}")


def publish_exact_schemas(app: Litestar) -> None:
    """Swap msgspec's component schemas into the OpenAPI document ``app`` serves (built once, here)."""
    document = app.plugins.get("OpenAPIPlugin").provide_openapi_schema()
    schemas: dict[str, Any] = document.setdefault("components", {}).setdefault("schemas", {})
    _, components = msgspec.json.schema_components(
        _handler_structs(app), schema_hook=_any_value, ref_template=_REFS
    )
    schemas.update(components)
    schemas[JSON_VALUE] = JSON_VALUE_SCHEMA  # what pinned properties refer to
