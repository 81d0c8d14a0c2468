"""Backend secrets in the admin API: write-only values, names shown, and a GET-then-PUT that keeps them.

Reads never carry a secret value: ``BearerToken`` is left out (``HasBearerToken`` says whether there is
one); each ``Headers`` value and each ``Querystring`` parameter value is replaced by ``REDACTED``
(``{"X-Api-Key": "<redacted>"}``, ``"api-version=<redacted>&api_key=<redacted>"``; a parameter without
``=`` is replaced whole). Writes treat ``REDACTED`` as "keep what is stored":

- a header whose value is ``REDACTED`` keeps the stored value of the header of that name (compared
  case-insensitively); the other headers of the body replace the stored set, as any PUT does;
- a query parameter ``name=<redacted>`` keeps the stored value of the same parameter (its n-th
  occurrence for the n-th one), a bare ``<redacted>`` the stored bare parameter likewise;
- ``BearerToken: "<redacted>"`` keeps the stored token, as omitting it does.

So a UI that reads a backend and writes it back, changed or not, never wipes or corrupts the secrets.
``REDACTED`` for something that is not stored (removed meanwhile by another writer, or typed in) keeps
nothing: that header or parameter is left out, as the stored state says. Every body the published
schema allows is thus accepted.

Pure: plain functions over plain values.
"""

from __future__ import annotations

from collections.abc import Mapping

from shared.secret_box import query_pairs

__all__ = [
    "REDACTED",
    "carries_new_secret",
    "keep_headers",
    "keep_querystring",
    "redact_headers",
    "redact_querystring",
]

REDACTED = "<redacted>"


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Header names with each non-empty value replaced by ``REDACTED``."""
    return {name: REDACTED if value else "" for name, value in headers.items()}


def redact_querystring(querystring: str | None) -> str | None:
    """Parameter names with each non-empty value replaced by ``REDACTED`` (a bare parameter whole)."""
    if not querystring:
        return querystring
    parts = [
        REDACTED if value is None else f"{name}={REDACTED if value else ''}"
        for name, value in query_pairs(querystring)
    ]
    return "&".join(parts)


def keep_headers(given: Mapping[str, str], stored: Mapping[str, str]) -> dict[str, str]:
    """``given`` with each ``REDACTED`` value replaced by the stored value of that header (left out if
    there is none)."""
    by_lower = {name.lower(): value for name, value in stored.items()}
    headers: dict[str, str] = {}
    for name, value in given.items():
        if value == REDACTED:
            kept = stored.get(name, by_lower.get(name.lower()))
            if kept is None:
                continue
            value = kept
        headers[name] = value
    return headers


def keep_querystring(given: str | None, stored: str | None) -> str | None:
    """``given`` with each ``REDACTED`` parameter value replaced by the stored one (a parameter with
    nothing stored to keep is left out); None if nothing is left."""
    if not given:
        return None
    if REDACTED not in given:
        return given
    stored_values: dict[str | None, list[str | None]] = {}
    for name, value in query_pairs(stored or ""):
        # A bare parameter is kept under the key None: its name is its secret.
        if value is None:
            stored_values.setdefault(None, []).append(name)
        else:
            stored_values.setdefault(name, []).append(value)
    seen: dict[str | None, int] = {}
    parts: list[str] = []
    for name, value in query_pairs(given):
        bare = value is None and name == REDACTED
        if value != REDACTED and not bare:
            parts.append(name if value is None else f"{name}={value}")
            continue
        key = None if bare else name
        index = seen.get(key, 0)
        seen[key] = index + 1
        candidates = stored_values.get(key, [])
        if index >= len(candidates):
            continue
        kept = candidates[index] or ""
        parts.append(kept if bare else f"{name}={kept}")
    return "&".join(parts) or None


def carries_new_secret(
    bearer_token: object, headers: Mapping[str, str] | None, querystring: str | None
) -> bool:
    """Whether a body gives a secret value of its own (not empty, not ``REDACTED``)."""
    if isinstance(bearer_token, str) and bearer_token and bearer_token != REDACTED:
        return True
    if headers and any(value and value != REDACTED for value in headers.values()):
        return True
    return any(
        (value is None and name != REDACTED) or (value and value != REDACTED)
        for name, value in query_pairs(querystring or "")
    )
