"""Strict JSON bodies for the admin API.

Litestar converts request bodies in msgspec's lax mode, where ``"true"`` passes for a boolean and
``"8000"`` for a port. OllamaFlow's API (System.Text.Json) rejects those, and so do we: this
``before_request`` hook decodes the body strictly against the handler's ``data`` type first and turns
a mismatch into a 400 naming the field. Malformed JSON is left to Litestar, whose error is mapped in
``controlplane.errors``.
"""

from __future__ import annotations

import re

import msgspec
from litestar import Request

from controlplane.errors import ApiError

__all__ = ["strict_json_body"]

# msgspec ends its messages with " - at `$.Port`", or " - at `key` in `$.Headers`" for a mapping key.
_LOCATION = re.compile(r"^(?P<message>.*) - at (?P<key>`key` in )?`\$(?P<path>.*)`$")


def describe(exc: msgspec.ValidationError) -> str:
    """msgspec's "Expected `int`, got `str` - at `$.Port`" as "Port: Expected `int`, got `str`"."""
    text = str(exc)
    match = _LOCATION.match(text)
    if match is None:
        return f"request body: {text}"
    path = match["path"].removeprefix(".") or "request body"
    return f"{path}{' (a key)' if match['key'] else ''}: {match['message']}"


async def strict_json_body(request: Request) -> None:
    """Reject a body whose JSON types do not match the handler's ``data`` type exactly."""
    parameter = request.route_handler.parsed_fn_signature.parameters.get("data")
    if parameter is None:
        return
    body = await request.body()
    try:
        msgspec.json.decode(body, type=parameter.annotation, strict=True)
    except msgspec.ValidationError as exc:
        raise ApiError.bad_request(describe(exc)) from None
    except msgspec.DecodeError:
        return  # not JSON at all: Litestar reports it
