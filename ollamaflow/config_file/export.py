"""``ollamaflow export``: the admin API's frontends, backends and API keys' settings as a cluster file.

Each resource keeps its Identifier and the fields that differ from the defaults, so the file stays
short and applying it changes nothing. Secrets cannot be read back, so each becomes a reference to an
environment variable with a generated name (``GPU1_BEARER_TOKEN``, ``GPU1_HEADER_X_API_KEY``,
``GPU1_QUERY_API_KEY``); the file's header lists them. Applying the file back needs none of them
while the secrets' names stay as they are (see ``ollamaflow.config_file.plan``).

Pure: plain data in, text out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from ollamaflow.config_file.model import ApiKeySpec, BackendSpec, FrontendSpec
from ollamaflow.config_file.plan import (
    APIKEY_FIELDS,
    BACKEND_FIELDS,
    FRONTEND_FIELDS,
    SECRET_FIELDS,
    apikey_view,
    backend_view,
    current_view,
    frontend_view,
)
from ollamaflow.config_file.secrets import reference
from shared.secret_box import query_pairs

__all__ = ["Variables", "cluster_document", "dump", "to_document"]


class Variables:
    """Generated environment variable names, each used once."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._taken: set[str] = set()

    def new(self, *parts: str) -> str:
        base = "_".join(_slug(part) for part in parts)
        if base[0].isdigit():
            base = "B" + base
        name, n = base, 2
        while name in self._taken:
            name, n = f"{base}_{n}", n + 1
        self._taken.add(name)
        self.names.append(name)
        return name


def _slug(text: str) -> str:
    return re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9]", "_", text)).strip("_").upper()[:40] or "X"


def _secret_refs(identifier: str, shown: Mapping[str, Any], variables: Variables) -> dict[str, Any]:
    """References in place of a backend's redacted secrets."""
    out: dict[str, Any] = {}
    if shown.get("BearerToken"):
        out["BearerToken"] = reference(variables.new(identifier, "BEARER_TOKEN"))
    headers = shown.get("Headers") or {}
    if headers:
        out["Headers"] = {
            name: reference(variables.new(identifier, "HEADER", name)) if value else ""
            for name, value in headers.items()
        }
    if shown.get("Querystring"):
        parts = []
        for index, (name, value) in enumerate(query_pairs(shown["Querystring"])):
            if value is None:
                parts.append(reference(variables.new(identifier, "QUERY", str(index + 1))))
            elif value:
                parts.append(f"{name}={reference(variables.new(identifier, 'QUERY', name))}")
            else:
                parts.append(f"{name}=")
        out["Querystring"] = "&".join(parts)
    return out


def to_document(
    frontends: Sequence[Mapping[str, Any]],
    backends: Sequence[Mapping[str, Any]],
    apikeys: Sequence[Mapping[str, Any]] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """The cluster file's data for the API's lists, and the generated variable names (API keys: only
    with their list, ``None`` leaves the section out)."""
    variables = Variables()
    f_defaults = frontend_view(FrontendSpec(identifier="-"))
    b_defaults = backend_view(BackendSpec(identifier="-"))
    doc_backends = []
    for shown in sorted(backends, key=lambda b: b["Identifier"]):
        view = current_view("backend", shown)
        item = {
            name: view[name]
            for name in BACKEND_FIELDS
            if name not in SECRET_FIELDS and (name == "Identifier" or view[name] != b_defaults[name])
        }
        item.update(_secret_refs(shown["Identifier"], view, variables))
        doc_backends.append(item)
    doc_frontends = []
    for shown in sorted(frontends, key=lambda f: f["Identifier"]):
        view = current_view("frontend", shown)
        doc_frontends.append(
            {
                name: view[name]
                for name in FRONTEND_FIELDS
                if name == "Identifier" or view[name] != f_defaults[name]
            }
        )
    document: dict[str, Any] = {"version": 1, "backends": doc_backends, "frontends": doc_frontends}
    if apikeys is not None:
        k_defaults = apikey_view(ApiKeySpec(identifier="-"))
        document["apikeys"] = [
            {
                name: view[name]
                for name in APIKEY_FIELDS
                if name == "Identifier" or view[name] != k_defaults[name]
            }
            for view in (current_view("apikey", k) for k in sorted(apikeys, key=lambda k: k["Identifier"]))
        ]
    return document, variables.names


def dump(document: Mapping[str, Any], variables: Sequence[str], *, origin: str) -> str:
    """The document as YAML, with a header saying where it came from and which variables it needs."""
    lines = [f"# OllamaFlow cluster file, {origin}.", "# Apply it with: ollamaflow apply -f <this file>"]
    if variables:
        lines.append("# Backend secrets are environment references; applying this file sends a secret only")
        lines.append("# when it is created or changes, and then needs its variable set:")
        lines += [f"#   {name}" for name in variables]
    text = yaml.dump(
        dict(document),
        Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper),  # libyaml's emitter where there is one
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=100,
    )
    return "\n".join(lines) + "\n" + text


def cluster_document(
    frontends: Sequence[Mapping[str, Any]],
    backends: Sequence[Mapping[str, Any]],
    apikeys: Sequence[Mapping[str, Any]] | None = None,
) -> str:
    document, variables = to_document(frontends, backends, apikeys)
    return dump(document, variables, origin="exported from the admin API")
