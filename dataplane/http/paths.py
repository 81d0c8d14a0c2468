"""Which route a request names, read from the raw path exactly as the client sent it.

The server percent-decodes ``scope["path"]``: ``/api/blobs/..%2F..%2Fapi%2Fpull`` decodes to a path that
climbs out of the blobs prefix, and a backend given it would serve its own ``/api/pull``. So routes
match the raw path, and no part of a client's path is ever sent to a backend: every route maps to a
fixed backend path. The only parameters a path carries are checked here: a blob digest (``sha256:``
and 64 hex digits) and an OpenAI model id (looked up in the merged model list, never forwarded).

Pure: no I/O.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import MutableMapping
from typing import Any

__all__ = ["BLOB_PREFIX", "MODEL_PREFIX", "blob_digest", "model_id", "raw_path"]

BLOB_PREFIX = "/api/blobs/"
MODEL_PREFIX = "/v1/models/"
_DIGEST = re.compile(r"sha256:[0-9a-fA-F]{64}")


def raw_path(scope: MutableMapping[str, Any]) -> str:
    """The request path as sent (percent-escapes kept, no query), as text.

    Latin-1 maps each byte to one character, so nothing is decoded or merged on the way.
    """
    raw: bytes | None = scope.get("raw_path")
    if raw is None:  # an ASGI server that does not give it: escape the decoded path again
        return urllib.parse.quote(scope["path"], safe="/:@!$&'()*+,;=-._~")
    return raw.decode("latin-1")


def blob_digest(path: str) -> str | None:
    """The digest of ``/api/blobs/<digest>`` when it is ``sha256:`` and 64 hex digits, else None."""
    digest = path[len(BLOB_PREFIX) :] if path.startswith(BLOB_PREFIX) else ""
    return digest if _DIGEST.fullmatch(digest) else None


def model_id(path: str) -> str:
    """The model id of ``/v1/models/<id>``, percent-decoded (ids such as ``org/model:tag`` keep their
    slashes and colons)."""
    return urllib.parse.unquote(path[len(MODEL_PREFIX) :]) if path.startswith(MODEL_PREFIX) else ""
