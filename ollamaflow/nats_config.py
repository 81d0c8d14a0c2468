"""NATS server configuration for OllamaFlow's bus: one user per role with that role's permissions.

The allow lists come from ``shared.bus_permissions``; this module only writes them in NATS's config
syntax. ``ollamaflow up`` writes a full server config with literal passwords (owner-only in its data
directory); ``ollamaflow nats-config`` prints the ``authorization`` block for a namespace, with
passwords either literal or read by NATS from environment variables (``$VAR``), as in
``deploy/nats.conf``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from shared.bus import BusNames
from shared.bus_permissions import Role, permissions

__all__ = ["NatsUser", "env_password", "literal_password", "render_authorization"]

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
