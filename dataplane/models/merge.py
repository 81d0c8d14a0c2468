"""Model lists from several backends read and merged into one (pure: no I/O, no clock).

The listing routes (``dataplane.models.listing``) fan out to a frontend's backends and hand the bodies
here. Entries stay the dicts the backends sent, so fields this module does not know (vLLM's
``max_model_len``, Ollama's ``capabilities``) reach the client untouched. Duplicates are found the
way Ollama compares names (``shared.models.model_key``); the first backend's entry wins.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import msgspec

from shared.errors import UpstreamProtocolError
from shared.models import model_key

__all__ = [
    "find_entry",
    "listed_entries",
    "merge_unique",
    "sort_by_expiry",
]

Entry = dict[str, Any]

_decoder = msgspec.json.Decoder()


def listed_entries(body: bytes, *, key: str, name_fields: tuple[str, ...]) -> list[Entry]:
    """The objects under ``key`` (``models`` for Ollama, ``data`` for OpenAI) that carry a name.

    A null or missing list is empty (Ollama's ``/v1/models`` says ``"data": null``); a body that
    is not such a document is the backend's fault.
    """
    try:
        document = _decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise UpstreamProtocolError(f"backend sent an unreadable model list: {exc}") from None
    if not isinstance(document, dict):
        raise UpstreamProtocolError("backend sent a model list that is not a JSON object")
    items = document.get(key)
    if items is None:
        return []
    if not isinstance(items, list):
        raise UpstreamProtocolError(f"backend sent a model list whose {key!r} is not a list")
    return [item for item in items if isinstance(item, dict) and entry_name(item, name_fields)]


def entry_name(entry: Entry, name_fields: tuple[str, ...]) -> str:
    """The first non-empty string among ``name_fields`` (``model`` before ``name``; ``id``)."""
    for field in name_fields:
        value = entry.get(field)
        if isinstance(value, str) and value:
            return value
    return ""


def merge_unique(lists: Iterable[list[Entry]], name_fields: tuple[str, ...]) -> list[Entry]:
    """The lists joined in order, each model once (by ``model_key``); the first entry wins."""
    seen: set[str] = set()
    merged: list[Entry] = []
    for entries in lists:
        for entry in entries:
            key = model_key(entry_name(entry, name_fields))
            if key not in seen:
                seen.add(key)
                merged.append(entry)
    return merged


def find_entry(entries: Iterable[Entry], name: str, name_fields: tuple[str, ...]) -> Entry | None:
    """The first entry naming the same model as ``name``, or None."""
    wanted = model_key(name)
    for entry in entries:
        if model_key(entry_name(entry, name_fields)) == wanted:
            return entry
    return None


def _expiry(entry: Entry) -> float:
    stamp = entry.get("expires_at")
    if isinstance(stamp, str):
        try:
            return datetime.fromisoformat(stamp).timestamp()
        except ValueError:
            pass
    return float("-inf")  # unreadable or missing: last


def sort_by_expiry(entries: list[Entry]) -> list[Entry]:
    """``/api/ps`` order: the model that stays loaded longest first (timestamps in any zone)."""
    return sorted(entries, key=_expiry, reverse=True)
