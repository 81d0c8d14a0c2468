"""``ollamaflow import``: an OllamaFlow (the C# original) installation as a cluster file.

OllamaFlow keeps its frontends and backends in a SQLite database (``ollamaflow.db``: tables
``frontends`` and ``backends``, one lower-case column per field, booleans as 0/1, lists and objects as
JSON text) and its server settings in ``ollamaflow.json`` (PascalCase; a hand-written one may also
carry ``Frontends`` and ``Backends`` lists, which OllamaFlow itself ignores but we take).

``read_database`` and ``read_settings`` read the sources (bounded); ``convert`` is pure: rows in, a
cluster-file document, the secret values found (by generated variable name) and notes on what has no
equivalent out. Secrets never go into the document: they become environment references, and their
values travel beside it (applied straight from memory, or written to an owner-only env file).
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ollamaflow.config_file.errors import FileError
from ollamaflow.config_file.export import Variables
from ollamaflow.config_file.model import (
    MAX_BACKENDS,
    MAX_FILE_BYTES,
    MAX_FRONTENDS,
    BackendSpec,
    ClusterSpec,
    FrontendSpec,
    parse_data,
)
from ollamaflow.config_file.plan import backend_view, frontend_view
from ollamaflow.config_file.secrets import reference
from shared.secret_box import query_pairs

__all__ = ["Converted", "convert", "read_database", "read_settings", "read_source"]

# OllamaFlow's columns -> our fields; JSON columns hold text to decode, BOOLEAN ones 0/1.
_FRONTEND_COLUMNS = {
    "identifier": "Identifier",
    "name": "Name",
    "hostname": "Hostname",
    "timeoutms": "TimeoutMs",
    "loadbalancing": "LoadBalancing",
    "blockhttp10": "BlockHttp10",
    "maxrequestbodysize": "MaxRequestBodySize",
    "backends": "Backends",
    "requiredmodels": "RequiredModels",
    "logrequestfull": "LogRequestFull",
    "logrequestbody": "LogRequestBody",
    "logresponsebody": "LogResponseBody",
    "usestickysessions": "UseStickySessions",
    "stickysessionexpirationms": "StickySessionExpirationMs",
    "pinnedembeddingsprops": "PinnedEmbeddingsProperties",
    "pinnedcompletionsprops": "PinnedCompletionsProperties",
    "allowretries": "AllowRetries",
    "allowembeddings": "AllowEmbeddings",
    "allowcompletions": "AllowCompletions",
    "active": "Active",
}
_BACKEND_COLUMNS = {
    "identifier": "Identifier",
    "name": "Name",
    "hostname": "Hostname",
    "port": "Port",
    "ssl": "Ssl",
    "unhealthythreshold": "UnhealthyThreshold",
    "healthythreshold": "HealthyThreshold",
    "healthcheckmethod": "HealthCheckMethod",
    "healthcheckurl": "HealthCheckUrl",
    "maxparallelrequests": "MaxParallelRequests",
    "ratelimitthreshold": "RateLimitRequestsThreshold",
    "logrequestfull": "LogRequestFull",
    "logrequestbody": "LogRequestBody",
    "logresponsebody": "LogResponseBody",
    "apiformat": "ApiFormat",
    "labels": "Labels",
    "pinnedembeddingsprops": "PinnedEmbeddingsProperties",
    "pinnedcompletionsprops": "PinnedCompletionsProperties",
    "bearertoken": "BearerToken",
    "querystring": "Querystring",
    "headers": "Headers",
    "allowembeddings": "AllowEmbeddings",
    "allowcompletions": "AllowCompletions",
    "active": "Active",
}
_JSON_FIELDS = {
    "Backends",
    "RequiredModels",
    "PinnedEmbeddingsProperties",
    "PinnedCompletionsProperties",
    "Labels",
    "Headers",
}
_BOOL_FIELDS = {
    "BlockHttp10",
    "LogRequestFull",
    "LogRequestBody",
    "LogResponseBody",
    "UseStickySessions",
    "AllowRetries",
    "AllowEmbeddings",
    "AllowCompletions",
    "Active",
    "Ssl",
}
# Kept by OllamaFlow, set anew by our control plane: not worth a note each.
_DROPPED_QUIETLY = {"createdutc", "lastupdateutc", "CreatedUtc", "LastUpdateUtc"}
# Runtime fields OllamaFlow's API shows (a settings file built from its answers may hold them).
_RUNTIME = {
    "HealthySinceUtc",
    "UnhealthySinceUtc",
    "Uptime",
    "Downtime",
    "ActiveRequests",
    "IsSticky",
    "UrlPrefix",
}
# ollamaflow.json's server settings and what replaces each here.
_SETTINGS_NOTES = {
    "webserver": "Webserver: no equivalent in the cluster file; data planes listen on "
    "OLLAMAFLOW_PORT (see README, Running each plane on its own)",
    "logging": "Logging: no equivalent; the planes log JSON lines to stderr "
    "(see README, Metrics, logs and traces)",
    "databasefilename": "DatabaseFilename: no equivalent; the control plane stores its state in PostgreSQL",
    "adminbearertokens": "AdminBearerTokens: not imported (a secret); give the control plane its admin "
    "tokens in OLLAMAFLOW_ADMIN_TOKENS",
}
_SQLITE_MAGIC = b"SQLite format 3\x00"
# OllamaFlow's rows are small (its columns are VARCHARs of at most 4096): this holds the most a
# cluster file takes many times over.
MAX_DATABASE_BYTES = 512 * 1024 * 1024


@dataclass
class Converted:
    document: dict[str, Any]
    secrets: dict[str, str] = field(default_factory=dict)  # generated variable name -> value
    notes: list[str] = field(default_factory=list)
    spec: ClusterSpec | None = None


@dataclass
class Source:
    """What the given files held: settings (``ollamaflow.json``) and rows (PascalCase dicts)."""

    settings: dict[str, Any] = field(default_factory=dict)
    frontends: list[dict[str, Any]] = field(default_factory=list)
    backends: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


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
        frontends = _table(conn, path, "frontends", _FRONTEND_COLUMNS, MAX_FRONTENDS, notes)
        backends = _table(conn, path, "backends", _BACKEND_COLUMNS, MAX_BACKENDS, notes)
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
                if column.lower() not in _DROPPED_QUIETLY:
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
    if name in _JSON_FIELDS:
        try:
            return json.loads(value) if isinstance(value, str) and value.strip() else None
        except (ValueError, RecursionError):
            raise FileError(f"{table} '{identifier}': the column for {name} is not valid JSON") from None
    if name in _BOOL_FIELDS:
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
    known = {name.lower(): name for name in [*_FRONTEND_COLUMNS.values(), *_BACKEND_COLUMNS.values()]}
    known.update({name.lower(): name for name in (*_RUNTIME, *_DROPPED_QUIETLY)})
    return {known.get(key.lower(), key): value for key, value in item.items()}


def convert(source: Source) -> Converted:
    """The source as a cluster-file document (validated), its secrets beside it, and notes."""
    notes = list(source.notes)
    for key in source.settings:
        if key == "stickyheaders":
            continue
        notes.append(_SETTINGS_NOTES.get(key, f"{key}: unknown OllamaFlow setting, not imported"))
    sticky = source.settings.get("stickyheaders")
    if sticky is not None:
        notes.append("StickyHeaders: global in OllamaFlow, set on each imported frontend here")
    variables = Variables()
    secrets: dict[str, str] = {}
    backends = [_backend(row, variables, secrets, notes) for row in source.backends]
    known = {b["Identifier"] for b in backends}
    frontends = [_frontend(row, known, sticky, notes) for row in source.frontends]
    b_defaults = backend_view(BackendSpec(identifier="-"))
    f_defaults = frontend_view(FrontendSpec(identifier="-"))
    document = {
        "version": 1,
        "backends": [_trim(b, b_defaults) for b in backends],
        "frontends": [_trim(f, f_defaults) for f in frontends],
    }
    try:
        spec = parse_data(document)
    except FileError as exc:
        raise FileError(f"the imported configuration: {_name_resource(str(exc), document)}") from None
    return Converted(document, secrets, notes, spec)


def _trim(item: dict[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Fields at our defaults left out (the file stays short; applying it gives the same)."""
    secret = {"BearerToken", "Headers", "Querystring"}
    return {
        k: v for k, v in item.items() if k == "Identifier" or (v != defaults.get(k) if k not in secret else v)
    }


def _name_resource(message: str, document: Mapping[str, Any]) -> str:
    match = re.match(r"^(frontends|backends)\[(\d+)\]", message)
    if match:
        items = document[match.group(1)]
        index = int(match.group(2))
        if index < len(items):
            return f"{message} ({match.group(1)[:-1]} '{items[index].get('Identifier')}')"
    return message


def _common(row: Mapping[str, Any]) -> dict[str, Any]:
    item = {}
    for key, value in row.items():
        if key in _DROPPED_QUIETLY or key in _RUNTIME:
            continue
        item[key] = value
    if not item.get("Name"):
        item["Name"] = None
    for key in (
        "PinnedEmbeddingsProperties",
        "PinnedCompletionsProperties",
        "Backends",
        "RequiredModels",
        "Labels",
        "Headers",
    ):
        if key in item and item[key] is None:
            del item[key]
    return item


def _backend(
    row: Mapping[str, Any], variables: Variables, secrets: dict[str, str], notes: list[str]
) -> dict[str, Any]:
    item = _common(row)
    identifier = str(item.get("Identifier") or "")
    if item.get("ApiFormat") not in (None, "Ollama", "OpenAI"):
        notes.append(
            f"backend '{identifier}': ApiFormat '{item['ApiFormat']}' has no equivalent; Ollama is used"
        )
        item["ApiFormat"] = "Ollama"
    token = item.pop("BearerToken", None)
    if isinstance(token, str) and token:
        name = variables.new(identifier, "BEARER_TOKEN")
        secrets[name] = token
        item["BearerToken"] = reference(name)
    headers = item.pop("Headers", None) or {}
    if isinstance(headers, dict) and headers:
        refs = {}
        for header, value in headers.items():
            if value:
                name = variables.new(identifier, "HEADER", str(header))
                secrets[name] = str(value)
                refs[header] = reference(name)
            else:
                refs[header] = ""
        item["Headers"] = refs
    elif headers:
        item["Headers"] = headers  # not an object: validation names it
    query = item.pop("Querystring", None)
    if isinstance(query, str) and query.lstrip("?"):
        parts = []
        for index, (param, value) in enumerate(query_pairs(query)):
            if value is None:
                name = variables.new(identifier, "QUERY", str(index + 1))
                secrets[name] = param
                parts.append(reference(name))
            elif value:
                name = variables.new(identifier, "QUERY", param)
                secrets[name] = value
                parts.append(f"{param}={reference(name)}")
            else:
                parts.append(f"{param}=")
        item["Querystring"] = "&".join(parts)
    return item


def _frontend(
    row: Mapping[str, Any], known_backends: set[str], sticky: Any, notes: list[str]
) -> dict[str, Any]:
    item = _common(row)
    identifier = item.get("Identifier")
    pool = item.get("Backends")
    if isinstance(pool, list):
        missing = [b for b in pool if b not in known_backends]
        if missing:
            names = ", ".join(f"'{b}'" for b in missing)
            notes.append(f"frontend '{identifier}': Backends names {names}, which the source lacks: left out")
            item["Backends"] = [b for b in pool if b in known_backends]
    if "LoadBalancing" not in item:
        item["LoadBalancing"] = "RoundRobin"  # OllamaFlow's default, kept rather than ours (ModelAware)
    if isinstance(sticky, list):
        item["StickyHeaders"] = sticky  # global in OllamaFlow, per frontend here
    return item
