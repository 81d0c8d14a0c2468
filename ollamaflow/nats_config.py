"""NATS server configuration for OllamaFlow's bus: one user per role with that role's permissions.

The allow lists come from ``shared.bus_permissions``; this module only writes them in NATS's config
syntax. ``ollamaflow up`` writes a full server config with literal passwords (owner-only in its data
directory); ``ollamaflow nats-config`` prints the ``authorization`` block for a namespace, with
passwords either literal or read by NATS from environment variables (``$VAR``), as in
``deploy/nats.conf``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from shared.bus import BusNames
from shared.bus_permissions import Role, permissions

__all__ = [
    "ROLE_USERS",
    "NatsUser",
    "env_password",
    "literal_password",
    "render_authorization",
    "write_private",
]

# The NATS user of each role, in ``up`` and in ``deploy/nats.conf``.
ROLE_USERS: dict[Role, str] = {"controlplane": "controlplane", "dataplane": "dataplane"}

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class NatsUser:
    name: str
    role: Role
    password: str  # already in config syntax: literal_password(...) or env_password(...)


def literal_password(password: str) -> str:
    return json.dumps(password)  # a double-quoted string with JSON escapes, which NATS reads too


def env_password(variable: str) -> str:
    """A password NATS reads from its own environment when it loads the config."""
    if not _ENV_NAME.match(variable):
        raise ValueError(f"not an environment variable name: {variable!r}")
    return "$" + variable


def _subjects(subjects: Sequence[str], indent: str) -> str:
    lines = ",\n".join(f"{indent}  {json.dumps(s)}" for s in subjects)
    return f"[\n{lines}\n{indent}]"


def render_authorization(names: BusNames, users: Sequence[NatsUser]) -> str:
    """The ``authorization { ... }`` block: only ``users`` get in, each with its role's permissions."""
    roles = sorted({user.role for user in users})
    out = ["authorization {"]
    for role in roles:
        allowed = permissions(names, role)
        out.append(f"  {role.upper()} = {{")
        out.append(f"    publish: {{ allow: {_subjects(allowed.publish, '    ')} }}")
        out.append(f"    subscribe: {{ allow: {_subjects(allowed.subscribe, '    ')} }}")
        if allowed.allow_responses:
            out.append("    allow_responses: true")
        out.append("  }")
    out.append("  users: [")
    for user in users:
        name, role = json.dumps(user.name), user.role.upper()
        out.append(f"    {{ user: {name}, password: {user.password}, permissions: ${role} }}")
    out.append("  ]")
    out.append("}")
    return "\n".join(out) + "\n"


def write_private(path: Path, text: str) -> None:
    """Write a config holding passwords, readable by the owner only from its first byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)
