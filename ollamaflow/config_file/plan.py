"""What ``ollamaflow apply`` changes: the cluster file against the admin API's state, as ordered actions.

Both sides become *views*: a dict per resource, PascalCase field -> value, over the file's fields. A
backend's secrets appear in the view as the API shows them (``BearerToken``: whether one is set;
``Headers`` and ``Querystring`` with each value ``"<redacted>"``), since their values cannot be read
back. So a secret counts as changed when its shape changes (a token added or removed, a header or
parameter added, removed or renamed); a changed secret field is sent whole, every value from the
environment. Unchanged secrets are not sent (``resend_secrets`` sends them all, to rotate values).

Order: create backends, update backends, delete API keys, delete frontends, update frontends, create
frontends, update API keys, create API keys, delete backends. A frontend can then name a backend (and
an API key a frontend) only once it exists, a backend goes only after the frontends that named it, and
a frontend's Hostname is free before another takes it. API keys take part only when the file has an
``apikeys`` list.

Pure: plain data in, plain data out.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from ollamaflow.config_file import secrets
from ollamaflow.config_file.errors import FileError
from ollamaflow.config_file.model import ApiKeySpec, BackendSpec, ClusterSpec, FrontendSpec

__all__ = [
    "APIKEY_FIELDS",
    "SECRET_FIELDS",
    "Action",
    "Plan",
    "apikey_view",
    "backend_view",
    "body",
    "current_view",
    "frontend_view",
    "make_plan",
    "missing_variables",
]

SECRET_FIELDS = ("BearerToken", "Headers", "Querystring")
Kind = Literal["backend", "frontend", "apikey"]
Op = Literal["create", "update", "delete"]


def _names(struct: type[msgspec.Struct]) -> tuple[str, ...]:
    return tuple(f.encode_name for f in msgspec.structs.fields(struct))


FRONTEND_FIELDS = _names(FrontendSpec)
BACKEND_FIELDS = _names(BackendSpec)
APIKEY_FIELDS = _names(ApiKeySpec)
_FIELDS: dict[str, tuple[str, ...]] = {
    "backend": BACKEND_FIELDS,
    "frontend": FRONTEND_FIELDS,
    "apikey": APIKEY_FIELDS,
}


@dataclass(frozen=True)
class Action:
    op: Op
    kind: Kind
    identifier: str
    # update: field -> (now, then); create: field -> value given (defaults left out); delete: empty.
    changes: dict[str, Any] = field(default_factory=dict)
    # Secret fields sent although their shape is unchanged (``resend_secrets``).
    resent: tuple[str, ...] = ()
    # Where the resource is in the file's list of its kind (a delete: -1, it is not in the file).
    index: int = -1

    def secrets_sent(self) -> tuple[str, ...]:
        """The secret fields whose values this action sends (so whose variables must be set)."""
        if self.kind != "backend" or self.op == "delete":
            return ()
        if self.op == "create":
            return SECRET_FIELDS
        return tuple(name for name in SECRET_FIELDS if name in self.changes or name in self.resent)


@dataclass(frozen=True)
class Plan:
    actions: list[Action]

    @property
    def empty(self) -> bool:
        return not self.actions


def frontend_view(spec: FrontendSpec) -> dict[str, Any]:
    view = msgspec.to_builtins(spec)
    # The API stores sticky header names lower-case without repeats.
    view["StickyHeaders"] = list(dict.fromkeys(name.lower() for name in spec.sticky_headers))
    return view


def apikey_view(spec: ApiKeySpec) -> dict[str, Any]:
    return msgspec.to_builtins(spec)


def backend_view(spec: BackendSpec) -> dict[str, Any]:
    view = msgspec.to_builtins(spec)
    shown = secrets.shape(spec.bearer_token, spec.headers, spec.querystring)
    view["BearerToken"] = shown.has_bearer_token
    view["Headers"] = shown.headers
    view["Querystring"] = shown.querystring
    return view


def current_view(kind: Kind, shown: Mapping[str, Any]) -> dict[str, Any]:
    """A resource as the admin API shows it, over the file's fields (one it leaves out, as a control
    plane from before that field would, at its default)."""
    names = _FIELDS[kind]
    defaults = _defaults(kind)
    view = {name: shown[name] if name in shown else defaults[name] for name in names}
    if kind == "backend":
        view["BearerToken"] = bool(shown.get("HasBearerToken"))
        view["Headers"] = dict(shown.get("Headers") or {})
        view["Querystring"] = shown.get("Querystring") or None
    return view


@functools.cache
def _default_view(kind: Kind) -> dict[str, Any]:
    if kind == "backend":
        return backend_view(BackendSpec(identifier="-"))
    if kind == "apikey":
        return apikey_view(ApiKeySpec(identifier="-"))
    return frontend_view(FrontendSpec(identifier="-"))


def _defaults(kind: Kind) -> dict[str, Any]:
    """Every field at its default (a copy: callers may keep it)."""
    return copy.deepcopy(_default_view(kind))


def make_plan(
    spec: ClusterSpec,
    frontends: Sequence[Mapping[str, Any]],
    backends: Sequence[Mapping[str, Any]],
    apikeys: Sequence[Mapping[str, Any]] = (),
    *,
    prune: bool = False,
    resend_secrets: bool = False,
) -> Plan:
    """The actions that make the API's ``frontends``, ``backends`` and ``apikeys`` (as listed) match
    ``spec`` (API keys only if the file has an ``apikeys`` list). ``FileError`` if the result could not
    hold (a frontend naming a backend, or an API key naming a frontend, that neither the file nor,
    without ``prune``, the control plane has; a Hostname a kept frontend already has)."""
    now_backends = {b["Identifier"]: current_view("backend", b) for b in backends}
    now_frontends = {f["Identifier"]: current_view("frontend", f) for f in frontends}
    _check_references(spec, now_frontends, now_backends, prune=prune)

    def diff(kind: Kind, views: list[dict[str, Any]], now: dict[str, dict[str, Any]], secret_ids: set[str]):
        creates, updates, deletes = [], [], []
        defaults = _defaults(kind)
        wanted = {view["Identifier"]: (index, view) for index, view in enumerate(views)}
        for identifier in sorted(wanted):
            index, view = wanted[identifier]
            if identifier not in now:
                given = {k: v for k, v in view.items() if k == "Identifier" or v != defaults.get(k)}
                creates.append(Action("create", kind, identifier, given, index=index))
                continue
            changes = {k: (now[identifier].get(k), v) for k, v in view.items() if now[identifier].get(k) != v}
            resent: tuple[str, ...] = ()
            if resend_secrets and identifier in secret_ids:
                resent = tuple(name for name in SECRET_FIELDS if name not in changes and view.get(name))
            if changes or resent:
                updates.append(Action("update", kind, identifier, changes, resent, index))
        if prune:
            deletes = [Action("delete", kind, identifier) for identifier in sorted(set(now) - set(wanted))]
        return creates, updates, deletes

    with_secrets = {
        b.identifier for b in spec.backends if secrets.references(b.bearer_token, b.headers, b.querystring)
    }
    b_create, b_update, b_delete = diff(
        "backend", [backend_view(b) for b in spec.backends], now_backends, with_secrets
    )
    f_create, f_update, f_delete = diff(
        "frontend", [frontend_view(f) for f in spec.frontends], now_frontends, set()
    )
    k_create: list[Action] = []
    k_update: list[Action] = []
    k_delete: list[Action] = []
    if spec.apikeys is not None:
        _check_key_frontends(spec, set(now_frontends), prune=prune)
        k_create, k_update, k_delete = diff(
            "apikey",
            [apikey_view(k) for k in spec.apikeys],
            {k["Identifier"]: current_view("apikey", k) for k in apikeys},
            set(),
        )
    return Plan(
        [*b_create, *b_update, *k_delete, *f_delete, *f_update, *f_create, *k_update, *k_create, *b_delete]
    )


def _check_key_frontends(spec: ClusterSpec, on_plane: set[str], *, prune: bool) -> None:
    known = {f.identifier for f in spec.frontends}
    if not prune:
        known |= on_plane
    where = "the file" if prune else "the file or on the control plane"
    for index, key in enumerate(spec.apikeys or []):
        for name in key.frontends:
            if name not in known:
                raise FileError(f"apikeys[{index}].Frontends: no frontend '{name}' in {where}")


def _check_references(
    spec: ClusterSpec,
    now_frontends: Mapping[str, Mapping[str, Any]],
    now_backends: Mapping[str, Mapping[str, Any]],
    *,
    prune: bool,
) -> None:
    in_file = {b.identifier for b in spec.backends}
    known = in_file if prune else in_file | set(now_backends)
    where = "the file" if prune else "the file or on the control plane"
    for index, frontend in enumerate(spec.frontends):
        for name in frontend.backends:
            if name not in known:
                raise FileError(f"frontends[{index}].Backends: no backend '{name}' in {where}")
    if prune:
        return
    mine = {f.identifier for f in spec.frontends}
    kept = {
        str(view.get("Hostname") or "").lower(): identifier
        for identifier, view in now_frontends.items()
        if identifier not in mine
    }
    for index, frontend in enumerate(spec.frontends):
        other = kept.get(frontend.hostname.lower())
        if other is not None:
            raise FileError(
                f"frontends[{index}].Hostname: frontend '{other}' on the control plane (not in the file) "
                f"already has Hostname '{frontend.hostname}'; add it to the file, or use --prune to delete it"
            )


def missing_variables(plan: Plan, spec: ClusterSpec, environ: Mapping[str, str]) -> list[str]:
    """The environment variables the plan's actions need that are not set, in order."""
    needed: list[str] = []
    for action in plan.actions:
        sent = action.secrets_sent()
        if not sent:
            continue
        backend = spec.backends[action.index]
        needed += secrets.references(
            backend.bearer_token if "BearerToken" in sent else None,
            backend.headers if "Headers" in sent else {},
            backend.querystring if "Querystring" in sent else None,
        )
    return [name for name in dict.fromkeys(needed) if name not in environ]


def body(action: Action, spec: ClusterSpec, environ: Mapping[str, str]) -> dict[str, Any]:
    """The JSON body of a create (``PUT`` to the collection) or update (``PATCH`` of the item), secret
    values resolved from ``environ`` (``missing_variables`` must have said none is missing). ``spec``
    is the one the plan was made from (actions point into its lists)."""
    if action.kind in ("frontend", "apikey"):
        if action.kind == "frontend":
            view = frontend_view(spec.frontends[action.index])
        else:
            view = apikey_view((spec.apikeys or [])[action.index])
        if action.op == "create":
            return view
        return {name: view[name] for name in action.changes}
    backend = spec.backends[action.index]
    view = backend_view(backend)
    sent = action.secrets_sent()
    # Only the secrets sent are resolved: the others' variables need not be set.
    values = secrets.resolve(
        backend.bearer_token if "BearerToken" in sent else None,
        backend.headers if "Headers" in sent else {},
        backend.querystring if "Querystring" in sent else None,
        environ,
    )
    resolved = {
        "BearerToken": values.bearer_token,
        "Headers": values.headers,
        "Querystring": values.querystring,
    }
    if action.op == "create":
        out = {name: value for name, value in view.items() if name not in SECRET_FIELDS}
        out.update({name: value for name, value in resolved.items() if value})
        return out
    out = {name: view[name] for name in action.changes if name not in SECRET_FIELDS}
    # A token no longer in the file is cleared with null (an omitted one would be kept).
    out.update({name: resolved[name] for name in sent})
    return out
