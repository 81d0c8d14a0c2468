"""``ollamaflow import``: an OllamaFlow (the C# original) installation as a cluster file.

OllamaFlow keeps its frontends and backends in a SQLite database (``ollamaflow.db``: tables
``frontends`` and ``backends``, one lower-case column per field, booleans as 0/1, lists and objects as
JSON text) and its server settings in ``ollamaflow.json`` (PascalCase; a hand-written one may also
carry ``Frontends`` and ``Backends`` lists, which OllamaFlow itself ignores but we take).

``ollamaflow.config_file.original_files`` reads those into a ``Source``; ``convert`` turns it into a
cluster-file document, the secret values found (by generated variable name) and notes on what has no
equivalent. Secrets never go into the document: they become environment references, and their values
travel beside it (applied straight from memory, or written to an owner-only env file).

Pure: plain data in and out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ollamaflow.config_file.errors import FileError
from ollamaflow.config_file.export import Variables
from ollamaflow.config_file.model import BackendSpec, ClusterSpec, FrontendSpec, parse_data
from ollamaflow.config_file.plan import backend_view, frontend_view
from ollamaflow.config_file.secrets import reference
from shared.secret_box import query_pairs

__all__ = [
    "BACKEND_COLUMNS",
    "BOOL_FIELDS",
    "DROPPED_QUIETLY",
    "FRONTEND_COLUMNS",
    "JSON_FIELDS",
    "RUNTIME",
    "Converted",
    "Source",
    "convert",
]

# OllamaFlow's columns -> our fields; JSON columns hold text to decode, BOOLEAN ones 0/1.
FRONTEND_COLUMNS = {
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
BACKEND_COLUMNS = {
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
JSON_FIELDS = {
    "Backends",
    "RequiredModels",
    "PinnedEmbeddingsProperties",
    "PinnedCompletionsProperties",
    "Labels",
    "Headers",
}
BOOL_FIELDS = {
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
DROPPED_QUIETLY = {"createdutc", "lastupdateutc", "CreatedUtc", "LastUpdateUtc"}
# Runtime fields OllamaFlow's API shows (a settings file built from its answers may hold them).
RUNTIME = {
    "HealthySinceUtc",
    "UnhealthySinceUtc",
    "Uptime",
    "Downtime",
    "ActiveRequests",
    "IsSticky",
    "UrlPrefix",
}
# ollamaflow.json's server settings and what replaces each here.
_UNENFORCED_DEFAULTS = {"MaxParallelRequests": 4, "RateLimitRequestsThreshold": 10}
_SETTINGS_NOTES = {
    "webserver": "Webserver: no equivalent in the cluster file; data planes listen on "
    "OLLAMAFLOW_PORT (see README, Running each plane on its own)",
    "logging": "Logging: no equivalent; the planes log JSON lines to stderr "
    "(see README, Metrics, logs and traces)",
    "databasefilename": "DatabaseFilename: no equivalent; the control plane stores its state in PostgreSQL",
    "adminbearertokens": "AdminBearerTokens: not imported (a secret); give the control plane its admin "
    "tokens in OLLAMAFLOW_ADMIN_TOKENS",
}


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
    # Same fields, new behaviour: what OllamaFlow stored without acting on, and we enforce.
    if backends:
        notes.append(
            "MaxParallelRequests, RateLimitRequestsThreshold: OllamaFlow stored them without enforcing "
            "them; here they cap each backend for the whole cluster. Its defaults (4 and 10) become 0, "
            "unlimited, as it behaved; other values are kept as limits"
        )
    if frontends:
        notes.append(
            "TimeoutMs, BlockHttp10: OllamaFlow never used them; here a request with no progress for "
            "TimeoutMs fails, and BlockHttp10 (true unless changed) refuses HTTP/1.0 clients"
        )
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
        if key in DROPPED_QUIETLY or key in RUNTIME:
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
    # OllamaFlow's defaults, never enforced there: unlimited here, as it behaved (0, our default).
    for name, its_default in _UNENFORCED_DEFAULTS.items():
        if item.get(name) == its_default:
            item[name] = 0
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
