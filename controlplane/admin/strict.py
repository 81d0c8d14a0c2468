"""Strict JSON bodies for the admin API.

Litestar converts request bodies in msgspec's lax mode, where ``"true"`` passes for a boolean and
``"8000"`` for a port. OllamaFlow's API (System.Text.Json) rejects those, and so do we (but for
``8000.0``, an integer by JSON Schema's rules, which the published schema lets clients send): this
``before_request`` hook decodes the body strictly against the handler's ``data`` type first and turns
a mismatch into a 400 naming the field. Malformed JSON is left to Litestar, whose error is mapped in
``controlplane.errors``.
"""

from __future__ import annotations

import functools
import re
from typing import Annotated, Any, get_args, get_origin

import msgspec
from litestar import Request

from controlplane.admin import schemas
from controlplane.errors import ApiError

__all__ = ["strict_json_body"]

# msgspec ends its messages with " - at `$.Port`", or " - at `key` in `$.Headers`" for a mapping key.
_LOCATION = re.compile(r"^(?P<message>.*) - at (?P<key>`key` in )?`\$(?P<path>.*)`$")
# msgspec shows the pattern as Python's repr() of it.
_PATTERN = re.compile(r"^Expected `str` matching regex (?P<pattern>.*)$", re.DOTALL)
# Patterns whose types carry no description of their own.
_PLAIN_MEANINGS = {
    schemas.Text: "any text without NUL characters",
    schemas.NO_BREAK: "text without line breaks or NUL characters",
    schemas.QUERYSTRING: "name=value pairs joined by '&', without whitespace or '#'",
}


@functools.cache
def _meanings() -> dict[str, str]:
    """Each pattern of the admin schemas, as msgspec quotes it (its repr), -> what it asks for in
    words (its type's description), so that a mismatch says "must be a host name ..." rather than
    quoting a regular expression."""
    found = {repr(pattern): meaning for pattern, meaning in _PLAIN_MEANINGS.items()}
    for value in vars(schemas).values():
        if get_origin(value) is not Annotated:
            continue
        for meta in get_args(value)[1:]:
            if isinstance(meta, msgspec.Meta) and meta.pattern and meta.description:
                found.setdefault(repr(meta.pattern), meta.description)
    return found


def describe(exc: msgspec.ValidationError) -> str:
    """msgspec's "Expected `int`, got `str` - at `$.Port`" as "Port: Expected `int`, got `str`"."""
    text = str(exc)
    match = _LOCATION.match(text)
    if match is None:
        return f"request body: {text}"
    path = match["path"].removeprefix(".") or "request body"
    message = match["message"]
    pattern = _PATTERN.match(message)
    if pattern is not None and (meaning := _meanings().get(pattern["pattern"])) is not None:
        message = f"must be {meaning}"
    return f"{path}{' (a key)' if match['key'] else ''}: {message}"


def _integral_floats_as_ints(value: Any) -> Any:
    """``8000.0`` as ``8000``: JSON Schema counts a number without a fraction as an integer, so a
    client may send one where the schema says integer (Litestar's lax decoding then takes it too)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_integral_floats_as_ints(item) for item in value]
    if isinstance(value, dict):
        return {key: _integral_floats_as_ints(item) for key, item in value.items()}
    return value


async def strict_json_body(request: Request) -> None:
    """Reject a body whose JSON types do not match the handler's ``data`` type exactly."""
    parameter = request.route_handler.parsed_fn_signature.parameters.get("data")
    if parameter is None:
        return
    body = await request.body()
    try:
        document = msgspec.json.decode(body)
        msgspec.convert(_integral_floats_as_ints(document), type=parameter.annotation, strict=True)
    except msgspec.ValidationError as exc:
        raise ApiError.bad_request(describe(exc)) from None
    except msgspec.DecodeError:
        return  # not JSON at all: Litestar reports it
    except RecursionError:  # arrays or objects nested hundreds deep: no body of ours is
        raise ApiError.bad_request("request body: JSON nested too deeply") from None
