"""`ollamaflow models`: which backend has, has loaded, requires and lacks which model."""

from __future__ import annotations

from typing import Any

from ollamaflow.commands.admin_io import DataDirOption, Json, Token, Url, emit_json, print_table, say, session


def models(url: Url = None, token: Token = None, data_dir: DataDirOption = None, json: Json = False) -> None:
    """Every model in the cluster: the backends that have it, have it loaded, require it (a frontend's
    RequiredModels) and lack it. What the leading control plane last read from the backends."""
    with session(url, token, data_dir) as client:
        found = client.get("/v1.0/models")
        if json:
            emit_json(found)
        elif not found:
            say("no models: no backend lists one and no frontend requires one")
        else:
            print_table(("Model", "Available on", "Loaded on", "Required on", "Missing on"), _rows(found))


def _rows(found: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (
            m.get("Name"),
            m.get("AvailableOn"),
            [loaded.get("Backend") for loaded in m.get("LoadedOn") or []],
            m.get("RequiredOn"),
            m.get("MissingOn"),
        )
        for m in found
    ]
