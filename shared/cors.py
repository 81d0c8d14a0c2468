"""PURE: the browser origins a plane lets read its answers (CORS), as both planes' settings take them.

``OLLAMAFLOW_CORS_ORIGINS`` (control plane) and ``OLLAMAFLOW_DATAPLANE_CORS_ORIGINS`` (data plane) are
comma-separated lists of origins exactly as browsers send them in ``Origin``: a scheme, a host and
an optional port, nothing after (``http://localhost:3000``, ``https://ui.example.com``). ``*`` allows
every origin; empty or ``none`` allows none (the default: no CORS headers at all).
"""

from __future__ import annotations

import re

__all__ = ["MAX_ORIGINS", "parse_origins"]

MAX_ORIGINS = 64
_MAX_LENGTH = 256
# scheme://host[:port]: a DNS name, IPv4 or bracketed IPv6; no user, path, query or trailing slash.
_LABEL = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
_ORIGIN = re.compile(rf"https?://(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9a-f:.]+\])(?::(?P<port>[0-9]{{1,5}}))?")


def parse_origins(text: str) -> tuple[str, ...]:
    """The origins in ``text`` (lower case, in order, without repeats); ValueError naming a bad one."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if len(items) == 1 and items[0].lower() == "none":
        return ()
    if len(items) > MAX_ORIGINS:
        raise ValueError(f"at most {MAX_ORIGINS} origins, got {len(items)}")
    origins: dict[str, None] = {}
    for item in items:
        origin = item.lower()
        if origin != "*":
            match = _ORIGIN.fullmatch(origin) if len(origin) <= _MAX_LENGTH else None
            if match is None:
                shown = item if len(item) <= 80 else item[:80] + "..."
                raise ValueError(
                    f"{shown!r} is not an origin: scheme://host[:port] as browsers send it "
                    "(e.g. http://localhost:3000, no path or trailing slash), or *"
                )
            if match["port"] is not None and not 1 <= int(match["port"]) <= 65535:
                raise ValueError(f"{item!r}: port {match['port']} is not 1 to 65535")
        origins[origin] = None
    return tuple(origins)
