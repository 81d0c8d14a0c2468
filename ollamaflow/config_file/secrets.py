"""A backend's secrets in the cluster file: environment references, never values.

``BearerToken``, each ``Headers`` value and each ``Querystring`` parameter value is written as
``${NAME}``, a whole reference to an environment variable (an empty header or parameter value may stay
empty, as the API shows it). A bare parameter (no ``=``) is secret whole, so it is a reference too::

    BearerToken: ${GPU1_TOKEN}
    Headers: {X-Api-Key: "${GPU1_API_KEY}"}
    Querystring: "api-version=${AZURE_API_VERSION}&api_key=${AZURE_KEY}"

The admin API never shows these values back (it shows ``"<redacted>"``), so the file is compared with
the API through their *shape*: whether there is a token, the header names (and which values are
empty), the parameter names; ``shape`` gives it in the API's own redacted form.

Pure: plain values in and out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import NamedTuple

from ollamaflow.config_file.errors import FileError
from shared.secret_box import query_pairs

__all__ = [
    "NO_SPACE",
    "REDACTED",
    "SecretShape",
    "SecretValues",
    "check_secrets",
    "reference",
    "references",
    "resolve",
    "shape",
]

REDACTED = "<redacted>"
_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]{0,127})\}$")
# What no identifier, path or query string holds (as the admin API says): controls, spaces and every
# character Python's or JSON Schema's \s counts as white space.
NO_SPACE = r"\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
BEARER_TOKEN_LENGTH = 4096
HEADER_VALUE_LENGTH = 4096
QUERYSTRING_LENGTH = 2048
_BREAKS = re.compile(r"[\r\n\x00]")
_NOT_IN_QUERY = re.compile(rf"[{NO_SPACE}&#]")
_EXAMPLE = "an environment reference like ${NAME}"


class SecretShape(NamedTuple):
    """What the admin API shows of a backend's secrets."""

    has_bearer_token: bool
    headers: dict[str, str]
    querystring: str | None


class SecretValues(NamedTuple):
    """A backend's secrets with their values, ready for the admin API."""

    bearer_token: str | None
    headers: dict[str, str]
    querystring: str | None


def reference(name: str) -> str:
    """``GPU1_TOKEN`` -> ``${GPU1_TOKEN}``."""
    return "${" + name + "}"


def _variable(value: str) -> str | None:
    match = _REF.match(value)
    return match.group(1) if match else None


def check_secrets(
    where: str, bearer_token: str | None, headers: Mapping[str, str], querystring: str | None
) -> None:
    """``FileError`` naming the field unless every secret value is a reference (or empty)."""
    if bearer_token and _variable(bearer_token) is None:
        raise FileError(f"{where}.BearerToken: a secret must be {_EXAMPLE}, never the value itself")
    lower: dict[str, str] = {}
    for name, value in headers.items():
        if name.lower() in lower:
            raise FileError(
                f"{where}.Headers.{name}: also given as '{lower[name.lower()]}' (names ignore case)"
            )
        lower[name.lower()] = name
        if value and _variable(value) is None:
            raise FileError(f"{where}.Headers.{name}: a header value is secret: write {_EXAMPLE}")
    for index, (name, value) in enumerate(query_pairs(querystring or "")):
        if value is None:
            if _variable(name) is None:
                raise FileError(
                    f"{where}.Querystring: parameter {index + 1} ('{name}') has no '=', so it is secret "
                    f"whole: write {_EXAMPLE}"
                )
        elif not name:
            raise FileError(f"{where}.Querystring: parameter {index + 1} has no name")
        elif value and _variable(value) is None:
            raise FileError(f"{where}.Querystring: the value of '{name}' is secret: write {_EXAMPLE}")


def shape(bearer_token: str | None, headers: Mapping[str, str], querystring: str | None) -> SecretShape:
    """The file's secrets as the admin API would show them once stored."""
    parts = [
        REDACTED if value is None else f"{name}={REDACTED if value else ''}"
        for name, value in query_pairs(querystring or "")
    ]
    return SecretShape(
        has_bearer_token=bool(bearer_token),
        headers={name: REDACTED if value else "" for name, value in headers.items()},
        querystring="&".join(parts) or None,
    )


def references(bearer_token: str | None, headers: Mapping[str, str], querystring: str | None) -> list[str]:
    """The environment variables the secrets name, in order, without repeats."""
    found = [bearer_token or "", *headers.values()]
    found += [name if value is None else value for name, value in query_pairs(querystring or "")]
    names = (_variable(item) for item in found if item)
    return list(dict.fromkeys(name for name in names if name))


def resolve(
    bearer_token: str | None,
    headers: Mapping[str, str],
    querystring: str | None,
    environ: Mapping[str, str],
) -> SecretValues:
    """The secrets with each reference replaced by its variable's value (every variable must be set:
    ``missing`` is checked first by the caller)."""

    def value(item: str, *, in_query: bool = False) -> str:
        name = _variable(item)
        if name is None:
            return item
        got = environ[name]
        if _BREAKS.search(got):
            raise FileError(f"environment variable {name}: holds a line break or NUL, which no secret may")
        if in_query and _NOT_IN_QUERY.search(got):
            raise FileError(
                f"environment variable {name}: a Querystring value may not hold white space, '&' or '#' "
                "(percent-encode them)"
            )
        return got

    parts = [
        value(name, in_query=True) if raw is None else f"{name}={value(raw, in_query=True) if raw else ''}"
        for name, raw in query_pairs(querystring or "")
    ]
    values = SecretValues(
        bearer_token=value(bearer_token) if bearer_token else None,
        headers={name: value(raw) if raw else "" for name, raw in headers.items()},
        querystring="&".join(parts) or None,
    )
    _check_lengths(values, bearer_token, headers)
    return values


def _check_lengths(values: SecretValues, bearer_token: str | None, headers: Mapping[str, str]) -> None:
    """The admin API's length limits, which a variable's value could break (then nothing is sent)."""
    if values.bearer_token and len(values.bearer_token) > BEARER_TOKEN_LENGTH:
        raise FileError(
            f"environment variable {_variable(bearer_token or '')}: a BearerToken may be at most "
            f"{BEARER_TOKEN_LENGTH} characters"
        )
    for name, got in values.headers.items():
        if len(got) > HEADER_VALUE_LENGTH:
            raise FileError(
                f"environment variable {_variable(headers[name])}: a header value may be at most "
                f"{HEADER_VALUE_LENGTH} characters"
            )
    if values.querystring and len(values.querystring) > QUERYSTRING_LENGTH:
        raise FileError(
            f"the Querystring, its variables' values put in, is {len(values.querystring)} characters, "
            f"more than the limit of {QUERYSTRING_LENGTH}"
        )
