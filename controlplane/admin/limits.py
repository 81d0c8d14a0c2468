"""Every size limit of the admin API in one place: field lengths, list and map sizes, host name
syntax, the JSON size of pinned properties, and the default caps on how many frontends, backends and
API keys a cluster holds.

The field limits are static so that the published OpenAPI schema shows them (maxLength, maxItems,
maxProperties, minimum, maximum, pattern); ``controlplane.admin.schemas`` builds its types from these
names. How many frontends, backends and API keys a cluster holds are settings instead
(``OLLAMAFLOW_MAX_FRONTENDS``…, ``controlplane.settings``). All are chosen generous for real fleets
while keeping one snapshot bounded.
"""

from __future__ import annotations

from typing import Any

import msgspec

from controlplane.errors import ApiError

__all__ = [
    "BACKEND_HOST_PATTERN",
    "BEARER_TOKEN_LENGTH",
    "FRONTEND_HOST_PATTERN",
    "HEADERS_COUNT",
    "HEADER_NAME_LENGTH",
    "HEADER_VALUE_LENGTH",
    "HOSTNAME_LENGTH",
    "JSON_VALUE",
    "JSON_VALUE_SCHEMA",
    "KEY_FRONTENDS_COUNT",
    "LABELS_COUNT",
    "LABEL_LENGTH",
    "MODEL_NAME_LENGTH",
    "NAME_LENGTH",
    "NO_SPACE",
    "PINNED_COUNT",
    "PINNED_DEPTH",
    "PINNED_JSON_BYTES",
    "POOL_BACKENDS_COUNT",
    "QUERYSTRING_LENGTH",
    "REQUIRED_MODELS_COUNT",
    "URL_PATH_LENGTH",
    "check_fields",
    "whole",
]

NAME_LENGTH = 256  # Name of a frontend, backend or API key
HOSTNAME_LENGTH = 253  # DNS's limit for a name
URL_PATH_LENGTH = 2048  # HealthCheckUrl
QUERYSTRING_LENGTH = 2048
BEARER_TOKEN_LENGTH = 4096
HEADERS_COUNT = 32  # a backend's Headers
HEADER_NAME_LENGTH = 128
HEADER_VALUE_LENGTH = 4096
LABELS_COUNT = 64  # a backend's Labels
LABEL_LENGTH = 128
REQUIRED_MODELS_COUNT = 256  # a frontend's RequiredModels
MODEL_NAME_LENGTH = 256  # one of them: "namespace/model:tag", or a registry path
POOL_BACKENDS_COUNT = 20_000  # a frontend's Backends: one may front the fleet (OLLAMAFLOW_MAX_BACKENDS)
KEY_FRONTENDS_COUNT = 5_000  # an API key's Frontends: all of them (OLLAMAFLOW_MAX_FRONTENDS)
PINNED_COUNT = 64  # top-level properties of PinnedEmbeddingsProperties / PinnedCompletionsProperties
PINNED_JSON_BYTES = 8192  # each of those, as compact JSON
PINNED_DEPTH = 32  # nesting of objects and arrays within them (the object itself counts)

# Host names: DNS labels of letters, digits, '-' (not first or last) and '_' (Docker and Compose
# service names use it), joined by dots, no trailing dot. Dotted IPv4 addresses match this too.
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_DNS_NAME = rf"{_LABEL}(?:\.{_LABEL})*"
# IPv6 literals without brackets (the base URL adds them) and without a zone; every "::" form.
_H = "[0-9A-Fa-f]{1,4}"
_IPV6 = "|".join(
    [
        rf"(?:{_H}:){{7}}{_H}",
        rf"(?:{_H}:){{1,7}}:",
        rf"(?:{_H}:){{1,6}}:{_H}",
        rf"(?:{_H}:){{1,5}}(?::{_H}){{1,2}}",
        rf"(?:{_H}:){{1,4}}(?::{_H}){{1,3}}",
        rf"(?:{_H}:){{1,3}}(?::{_H}){{1,4}}",
        rf"(?:{_H}:){{1,2}}(?::{_H}){{1,5}}",
        rf"{_H}:(?::{_H}){{1,6}}",
        rf":(?::{_H}){{1,7}}",
        "::",
    ]
)

# What no identifier, path or query string holds: controls, spaces and every character either
# Python's or JSON Schema's \s counts as white space, spelled out because the two differ.
NO_SPACE = r"\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"


def whole(body: str) -> str:
    """A pattern that ``body`` must match as a whole string. The look-ahead refuses any newline,
    because Python's ``$`` (msgspec's reading) also matches before a final one and JSON Schema's
    does not."""
    return rf"^(?!.*\n)(?:{body})$"


BACKEND_HOST_PATTERN = whole(rf"{_DNS_NAME}|{_IPV6}")
# A frontend also takes "*": it serves every Host that no other frontend names.
FRONTEND_HOST_PATTERN = whole(rf"\*|{_DNS_NAME}|{_IPV6}")


# The component schema of a pinned property's value: any JSON without NUL in its strings (Postgres
# cannot store one). ``controlplane.admin.openapi`` publishes it.
JSON_VALUE = "PinnedValue"
_NO_NUL = {"type": "string", "pattern": r"^[^\x00]*$"}
JSON_VALUE_SCHEMA = {
    "description": "any JSON value without NUL characters in its strings",
    "anyOf": [
        {"type": ["null", "boolean", "number"]},
        _NO_NUL,
        {"type": "array", "items": {"$ref": f"#/components/schemas/{JSON_VALUE}"}},
        {
            "type": "object",
            "propertyNames": _NO_NUL,
            "additionalProperties": {"$ref": f"#/components/schemas/{JSON_VALUE}"},
        },
    ],
}


def _shape(value: Any) -> tuple[int, bool]:
    """How deeply objects and arrays nest in ``value`` (a scalar: 0), and whether a string or key in it
    holds NUL; iterative, for any depth."""
    deepest, nul, stack = 0, False, [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            nul = nul or any("\x00" in key for key in item)
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            nul = nul or (isinstance(item, str) and "\x00" in item)
            deepest = max(deepest, level)
            continue
        deepest = max(deepest, level + 1)
        stack.extend((child, level + 1) for child in children)
    return deepest, nul


_PINNED_FIELDS = {
    "pinned_embeddings_properties": "PinnedEmbeddingsProperties",
    "pinned_completions_properties": "PinnedCompletionsProperties",
}


def check_fields(fields: dict[str, Any]) -> None:
    """400 naming the field if ``fields`` (a body's given fields, by Python name) break a limit that
    decoding does not enforce: the size and depth of pinned properties (JSON Schema has no keyword for
    either, so the schema only says it), and RequiredModels when the control plane itself changes it
    (a pull adding its model builds the body in code, where msgspec checks nothing)."""
    for name, field in _PINNED_FIELDS.items():
        if name in fields:
            _check_pinned(field, fields[name])
    models = fields.get("required_models")
    if models is not None:
        if len(models) > REQUIRED_MODELS_COUNT:
            raise ApiError.bad_request(
                f"RequiredModels: {len(models)} models, more than the limit of {REQUIRED_MODELS_COUNT}"
            )
        for model in models:
            if not 0 < len(model) <= MODEL_NAME_LENGTH:
                raise ApiError.bad_request(
                    f"RequiredModels: a model name must be 1-{MODEL_NAME_LENGTH} characters long"
                )


def _check_pinned(field: str, value: dict[str, Any]) -> None:
    size = len(msgspec.json.encode(value))
    if size > PINNED_JSON_BYTES:
        raise ApiError.bad_request(
            f"{field}: {size} bytes as JSON, more than the limit of {PINNED_JSON_BYTES}"
        )
    depth, nul = _shape(value)
    if nul:
        raise ApiError.bad_request(f"{field}: a string holds a NUL character")
    if depth > PINNED_DEPTH:
        raise ApiError.bad_request(f"{field}: nested {depth} deep, more than the limit of {PINNED_DEPTH}")
