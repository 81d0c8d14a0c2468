"""Where a backend lives and how a request to it is written, prepared once per snapshot.

Pure. A backend's base URL becomes an ``Origin`` (what a pooled connection is keyed by) and the
fixed parts of every request head (path prefix, Host line, the backend's own header lines), so that
a proxied request only joins prepared bytes with the client's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["BackendHttp", "Origin", "header_line", "prepare"]

# RFC 9110 token characters: what a header name may hold.
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Origin:
    """scheme://host:port of a backend; ``invalid`` says why its URL cannot be used (empty if it can)."""

    host: str
    port: int
    tls: bool
    invalid: str = ""


@dataclass(frozen=True, slots=True)
class BackendHttp:
    """A backend's origin and the request-head parts that never change between its requests."""

    origin: Origin
    path_prefix: bytes  # the base URL's path, without a trailing slash
    fixed_lines: bytes  # "Host: ...\r\n" and the backend's own header lines
    query: bytes  # the backend's query string, without "?"


def header_line(name: str, value: str) -> bytes | None:
    """``Name: value\\r\\n``, or None for a header that cannot be sent safely (bad name, CR/LF/NUL)."""
    if not _TOKEN.match(name) or any(c in value for c in "\r\n\0"):
        return None
    try:
        encoded = value.encode("latin-1")
    except UnicodeEncodeError:
        encoded = value.encode("utf-8")
    return name.encode("ascii") + b": " + encoded.strip() + b"\r\n"


def _origin(base_url: str) -> tuple[Origin, bytes, bytes]:
    """The origin, the Host header value and the path prefix of ``base_url``."""
    try:
        parts = urlsplit(base_url)
        port = parts.port
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"{base_url!r} is not an http(s) URL with a host")
        host = parts.hostname
        name = host.encode("ascii") if host.isascii() else host.encode("idna")
    except (ValueError, UnicodeError) as exc:
        return Origin("", 0, False, invalid=str(exc)), b"", b""
    port = port or _DEFAULT_PORTS[scheme]
    authority = b"[" + name + b"]" if b":" in name else name
    if port != _DEFAULT_PORTS[scheme]:
        authority += b":%d" % port
    return Origin(host, port, scheme == "https"), authority, parts.path.rstrip("/").encode("utf-8")


def prepare(base_url: str, headers: list[tuple[str, str]], query: str) -> BackendHttp:
    """The parts of a backend's requests that a snapshot fixes; unsendable headers are left out."""
    origin, authority, path = _origin(base_url)
    lines = [b"Host: " + authority + b"\r\n"]
    lines.extend(line for name, value in headers if (line := header_line(name, value)) is not None)
    return BackendHttp(
        origin=origin, path_prefix=path, fixed_lines=b"".join(lines), query=query.encode("utf-8")
    )
