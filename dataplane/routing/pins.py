"""Pinned properties: a frontend's and a backend's fixed request fields merged into a request body.

Pure: no I/O. Precedence, lowest first: what the client sent < the frontend's pins < the backend's
pins. Pins win over the client because they are pinned. Objects merge key by key at every depth (so
a pinned ``options.num_ctx`` keeps the client's ``options.temperature``); anything else, lists
included, is replaced whole. A model the frontend pins replaces the client's before routing, so the
request goes to backends that have it. Pins are written in the backend's API format and apply to the
body the backend receives, after any translation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

__all__ = ["apply_pins", "deep_merge", "with_model"]

_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """A new dict: ``base`` with ``over`` laid on top; nested objects merge, everything else is replaced.

    Neither argument is changed; merged nested objects are new dicts too.
    """
    merged = dict(base)
    for key, value in over.items():
        below = merged.get(key)
        if isinstance(value, Mapping) and isinstance(below, Mapping):
            merged[key] = deep_merge(below, value)
        elif isinstance(value, Mapping):
            merged[key] = deep_merge({}, value)  # a copy: the caller's pins are never shared
        else:
            merged[key] = value
    return merged


def apply_pins(body: bytes, pins: Mapping[str, Any]) -> bytes:
    """``body`` (a JSON object) with ``pins`` merged over it, re-encoded; unchanged if pins are empty."""
    if not pins:
        return body
    fields = _decoder.decode(body)
    if not isinstance(fields, dict):  # the proxy only forwards objects; anything else stays as sent
        return body
    return _encoder.encode(deep_merge(fields, pins))


def with_model(body: bytes, model: str) -> bytes:
    """``body`` (a JSON object) asking for ``model``: a frontend's pinned model, applied before routing."""
    fields = _decoder.decode(body)
    fields["model"] = model
    return _encoder.encode(fields)
