"""What every translator shares: the translated call, a local reply, ids, timestamps, JSON decoding."""

from __future__ import annotations

import functools
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec

from dataplane.translate.errors import Untranslatable

__all__ = [
    "JSON_CONTENT_TYPE",
    "BackendCall",
    "IdSource",
    "LocalReply",
    "decode_request",
    "random_id",
    "rfc3339",
    "unix_seconds",
]

JSON_CONTENT_TYPE = "application/json; charset=utf-8"

_T = TypeVar("_T")

# Makes a fresh unique id with the given prefix ("chatcmpl-", "call_"); injected so tests are exact.
IdSource = Callable[[str], str]


def random_id(prefix: str) -> str:
    """The production ``IdSource``: the prefix and 24 random hex digits."""
    return prefix + secrets.token_hex(12)


@dataclass(frozen=True)
class BackendCall:
    """A request translated for the backend: where to send it and the new body.

    The rest tells the reply translator what the client asked for: ``model`` is the name every
    translated reply echoes; ``include_usage`` (OpenAI streams) adds the usage chunk; ``base64``
    (OpenAI embeddings) encodes vectors as base64 float32.
    """

    path: str
    body: bytes
    stream: bool
    model: str
    include_usage: bool = False
    base64: bool = False


@dataclass(frozen=True)
class LocalReply:
    """An answer the translation gives itself, without calling a backend (e.g. Ollama's load call)."""

    body: bytes
    status: int = 200
    content_type: str = JSON_CONTENT_TYPE


def decode_request(body: bytes, kind: type[_T]) -> _T:
    """A client's JSON body as ``kind``; bad or missing JSON is a 400 the client can read."""
    if not body.strip():
        raise Untranslatable("missing request body")
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        raise Untranslatable(f"invalid request: {exc}") from None
    except msgspec.DecodeError as exc:
        raise Untranslatable(f"invalid JSON in request body: {exc}") from None


def rfc3339(ns: int) -> str:
    """A Unix time in nanoseconds as Go's RFC 3339 with nanoseconds, in UTC (``...T10:00:03.2Z``)."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    stamp = _second(seconds)
    digits = f"{fraction:09d}".rstrip("0")
    return f"{stamp}.{digits}Z" if digits else f"{stamp}Z"


@functools.lru_cache(maxsize=8)
def _second(seconds: int) -> str:
    """The whole-second part, formatted once per second: a translated stream stamps every chunk, and
    formatting costs several microseconds."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")


_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|z|[+-]\d\d:\d\d)")


def unix_seconds(stamp: Any) -> int:
    """An RFC 3339 timestamp (any number of fraction digits) as whole Unix seconds; 0 if unreadable."""
    match = _RFC3339.fullmatch(stamp) if isinstance(stamp, str) else None
    if match is None:
        return 0
    base, _, zone = match.groups()
    zone = "+00:00" if zone in ("Z", "z") else zone
    return int(datetime.fromisoformat(base + zone).timestamp())
