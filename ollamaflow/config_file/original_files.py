"""Reading an OllamaFlow installation for ``ollamaflow import``: its SQLite database (opened
read-only) and its ``ollamaflow.json``, bounded in size and rows, into a ``Source`` of PascalCase rows
that ``ollamaflow.config_file.original.convert`` turns into a cluster file."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ollamaflow.config_file.errors import FileError
from ollamaflow.config_file.model import MAX_BACKENDS, MAX_FILE_BYTES, MAX_FRONTENDS
from ollamaflow.config_file.original import (
    BACKEND_COLUMNS,
    BOOL_FIELDS,
    DROPPED_QUIETLY,
    FRONTEND_COLUMNS,
    JSON_FIELDS,
    RUNTIME,
    Source,
)

__all__ = ["MAX_DATABASE_BYTES", "read_database", "read_settings", "read_source"]

_SQLITE_MAGIC = b"SQLite format 3\x00"
# OllamaFlow's rows are small (its columns are VARCHARs of at most 4096): this holds the most a
# cluster file takes many times over.
MAX_DATABASE_BYTES = 512 * 1024 * 1024


def read_source(paths: Sequence[Path]) -> Source:
    """Every given file into one Source: SQLite databases by their header, the rest as JSON settings."""
    source = Source()
    for path in paths:
        try:
            with path.open("rb") as handle:
                head = handle.read(len(_SQLITE_MAGIC))
        except OSError as exc:
            raise FileError(f"cannot read {path}: {exc.strerror or exc}") from None
        if head == _SQLITE_MAGIC:
            frontends, backends, notes = read_database(path)
        else:
            settings, frontends, backends, notes = read_settings(path)
            source.settings.update(settings)
        source.frontends += frontends
        source.backends += backends
        source.notes += notes
    return source


def read_database(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """The frontends and backends of an OllamaFlow SQLite database (opened read-only)."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise FileError(f"cannot read {path}: {exc.strerror or exc}") from None
    if size > MAX_DATABASE_BYTES:
        raise FileError(f"{path} is {size} bytes, more than the limit of {MAX_DATABASE_BYTES}")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise FileError(f"cannot open {path} as an OllamaFlow database: {exc}") from None
    notes: list[str] = []
    try:
        conn.row_factory = sqlite3.Row
        frontends = _table(conn, path, "frontends", FRONTEND_COLUMNS, MAX_FRONTENDS, notes)
        backends = _table(conn, path, "backends", BACKEND_COLUMNS, MAX_BACKENDS, notes)
    except sqlite3.Error as exc:
        raise FileError(f"cannot read {path} as an OllamaFlow database: {exc}") from None
    finally:
        conn.close()
    return frontends, backends, notes


def _table(
    conn: sqlite3.Connection, path: Path, table: str, columns: Mapping[str, str], cap: int, notes: list[str]
) -> list[dict[str, Any]]:
    found = conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name=?", (table,)).fetchone()
    if found is None:
        raise FileError(f"{path} has no '{table}' table: not an OllamaFlow database")
    rows = conn.execute(f"SELECT * FROM '{table}' LIMIT ?", (cap + 1,)).fetchall()
    if len(rows) > cap:
        raise FileError(f"{path}: more than {cap} {table}, the most a cluster file holds")
    out = []
    for row in rows:
        item: dict[str, Any] = {}
        identifier = dict(zip(row.keys(), row, strict=True)).get("identifier")
        for column in row.keys():  # noqa: SIM118 - sqlite3.Row is not a mapping
            name = columns.get(column.lower())
            if name is None:
                if column.lower() not in DROPPED_QUIETLY:
                    note = f"{table}.{column}: no equivalent, not imported"
                    if note not in notes:
                        notes.append(note)
                continue
            item[name] = _column_value(table, identifier, name, row[column])
        out.append(item)
    return out


def _column_value(table: str, identifier: Any, name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in JSON_FIELDS:
        try:
            return json.loads(value) if isinstance(value, str) and value.strip() else None
        except (ValueError, RecursionError):
            raise FileError(f"{table} '{identifier}': the column for {name} is not valid JSON") from None
    if name in BOOL_FIELDS:
        return bool(value) if isinstance(value, int) else value
    return value


def read_settings(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """An ``ollamaflow.json``: its settings, and its Frontends and Backends lists if it has them."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise FileError(f"{path} is {size} bytes, more than the limit of {MAX_FILE_BYTES}")
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except OSError as exc:
        raise FileError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (ValueError, RecursionError) as exc:
        raise FileError(f"{path} is neither an OllamaFlow SQLite database nor JSON settings: {exc}") from None
    if not isinstance(data, dict):
        raise FileError(f"{path}: OllamaFlow settings are a JSON object")
    settings: dict[str, Any] = {}
    lists: dict[str, list[dict[str, Any]]] = {"frontends": [], "backends": []}
    for key, value in data.items():
        lower = key.lower()
        if lower in lists:
            if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
                raise FileError(f"{path}: {key} must be a list of objects")
            cap = MAX_FRONTENDS if lower == "frontends" else MAX_BACKENDS
            if len(value) > cap:
                raise FileError(f"{path}: more than {cap} {lower}")
            lists[lower] = [_pascal_keys(item) for item in value]
        else:
            settings[lower] = value
    return settings, lists["frontends"], lists["backends"], []


def _pascal_keys(item: Mapping[str, Any]) -> dict[str, Any]:
    """OllamaFlow reads JSON case-insensitively: take any spelling of a known field."""
    known = {name.lower(): name for name in [*FRONTEND_COLUMNS.values(), *BACKEND_COLUMNS.values()]}
    known.update({name.lower(): name for name in (*RUNTIME, *DROPPED_QUIETLY)})
    return {known.get(key.lower(), key): value for key, value in item.items()}
