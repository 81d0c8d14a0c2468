"""Which headers cross the proxy, in each direction.

Pure functions over raw header lists. Hop-by-hop headers never cross (RFC 9110 §7.6.1); neither do
the client's credentials (Authorization, X-Api-Key, X-OllamaFlow-Admin-Token: they were meant for us,
not for the backend), nor its Host (the backend gets its own host:port so that Ollama's Host check
passes).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from dataplane.http.request_context import ID_HEADER

__all__ = ["ClientHeaders", "read_client_headers", "request_id_of", "response_headers"]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

# Headers the proxy sets itself on the upstream request, so the client's copies are dropped.
_REPLACED_UPSTREAM = frozenset(
    {
        b"host",
        b"content-length",
        b"authorization",
        b"x-api-key",
        b"x-ollamaflow-admin-token",
        b"x-forwarded-for",
        ID_HEADER,
        b"expect",
    }
)
# Headers of the upstream response the proxy server writes itself.
_REPLACED_DOWNSTREAM = frozenset({b"date", ID_HEADER, b"x-ollamaflow-backend"})


# A client's X-Request-ID becomes the request's id when it is short and plain; otherwise it is dropped
# (it would end up in log lines and response headers).
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._~:/+=@-]{1,128}")
# W3C traceparent: version-traceid-parentid-flags; its trace id names the request when no X-Request-ID.
_TRACEPARENT = re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")
_ZERO_TRACE = b"0" * 32


def request_id_of(value: bytes) -> str:
    """An X-Request-ID value when it may name the request (1-128 of ``A-Za-z0-9._~:/+=@-``), else ""."""
    value = value.strip()
    return value.decode("ascii") if _REQUEST_ID.fullmatch(value) else ""


def _trace_id(value: bytes) -> str:
    match = _TRACEPARENT.fullmatch(value.strip())
    if match is None or match.group(1) == b"ff" or match.group(2) == _ZERO_TRACE:
        return ""
    return match.group(2).decode("ascii")


@dataclass(slots=True)
class ClientHeaders:
    """The few client headers the proxy reads, plus the ones it forwards as they are."""

    host: str = ""
    content_length: int | None = None
    forwarded_for: bytes = b""
    label: str = ""  # X-OllamaFlow-Label: only backends with this label may serve the request
    explain: bool = False  # X-OllamaFlow-Explain: 1 asks for X-OllamaFlow-Route on the response
    # The request's id from a valid X-Request-ID, else a valid traceparent's trace id; "" for neither.
    request_id: str = ""
    forward: list[tuple[bytes, bytes]] = field(default_factory=list)  # names lower-case, as ASGI gives them


def read_client_headers(raw: Iterable[tuple[bytes, bytes]]) -> ClientHeaders:
    """Split ASGI request headers (names already lower-case) in one pass."""
    out = ClientHeaders()
    named_by_connection: set[bytes] = set()
    kept: list[tuple[bytes, bytes]] = []
    for name, value in raw:
        if name == b"host":
            out.host = value.decode("latin-1")
        elif name == b"content-length":
            try:
                out.content_length = int(value)
            except ValueError:
                out.content_length = None
        elif name == b"x-forwarded-for":
            out.forwarded_for = out.forwarded_for + b", " + value if out.forwarded_for else value
        elif name == b"x-ollamaflow-label":  # meant for us: it does not go upstream
            out.label = value.decode("latin-1").strip()
        elif name == b"x-ollamaflow-explain":  # meant for us too
            out.explain = value.strip().lower() in (b"1", b"true", b"yes")
        elif name == b"connection":
            named_by_connection.update(t.strip().lower() for t in value.split(b","))
        elif name == b"x-request-id":  # passed on only when valid: it is the request's id then
            request_id = request_id_of(value)
            if request_id:
                out.request_id = request_id
                kept.append((name, value))
        elif name not in HOP_BY_HOP and name not in _REPLACED_UPSTREAM:
            if name == b"traceparent" and not out.request_id:
                out.request_id = _trace_id(value)
            kept.append((name, value))
    out.forward = [h for h in kept if h[0] not in named_by_connection] if named_by_connection else kept
    return out


def response_headers(
    raw: Iterable[tuple[bytes, bytes]], extra: Iterable[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    """ASGI response headers: the upstream's end-to-end headers, lower-cased, then ``extra``."""
    named_by_connection: set[bytes] = set()
    kept: list[tuple[bytes, bytes]] = []
    for name, value in raw:
        lower = name.lower()
        if lower == b"connection":
            named_by_connection.update(t.strip().lower() for t in value.split(b","))
        elif lower not in HOP_BY_HOP and lower not in _REPLACED_DOWNSTREAM:
            kept.append((lower, value))
    if named_by_connection:
        kept = [(n, v) for n, v in kept if n not in named_by_connection]
    kept.extend(extra)
    return kept
