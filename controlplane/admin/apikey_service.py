"""Client API keys, with the frontend and backend routes' semantics (``controlplane.admin.crud``).

- Create: the server generates the key, ``ofk_`` and 32 random bytes (URL-safe base64), and shows it in
  the create answer only; the database keeps its SHA-256 and its first characters (``KeyPrefix``, to
  tell keys apart).
- Replace (PUT item) and patch change the settings; the key stays the same.
- ``Frontends`` may only name existing frontends (409), which stay share-locked until the commit; a
  deleted frontend leaves every key's list (``FrontendService``).
- Usage: the counters folded into the key's row plus the live rows of ``apikey_usage``
  (``controlplane.apikey_usage``), summed.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from controlplane.admin.crud import Service, field_names, given, require_rows
from controlplane.admin.schemas import ApiKeyCreated, ApiKeyIn, ApiKeyOut
from controlplane.tables import ApiKeyRow, ApiKeyUsageRow, FrontendRow
from shared.credentials import digest

__all__ = ["KEY_PREFIX", "ApiKeyService", "new_key"]

KEY_PREFIX = "ofk_"
_SHOWN = len(KEY_PREFIX) + 8  # characters of a key kept for display: 48 of its 256 random bits
_FIELDS = field_names(ApiKeyIn, without=["identifier"])
_OUT = field_names(ApiKeyOut, without=["requests_total", "rate_limited_total", "last_used_utc"])


def new_key() -> str:
    """A fresh key: 256 random bits, URL-safe, recognisable by its prefix."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


class _Usage(msgspec.Struct, frozen=True):
    requests: int = 0
    rate_limited: int = 0
    last_used: datetime | None = None


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return a or b
    return max(a, b)


def _out(row: ApiKeyRow, live: _Usage = _Usage()) -> ApiKeyOut:
    return ApiKeyOut(
        **{name: getattr(row, name) for name in _OUT},
        requests_total=row.requests_total + live.requests,
        rate_limited_total=row.rate_limited_total + live.rate_limited,
        last_used_utc=_later(row.last_used_utc, live.last_used),
    )


class ApiKeyService(Service[ApiKeyRow, ApiKeyOut]):
    """CRUD of API keys."""

    table = ApiKeyRow
    what = "API key"
    a_what = "an API key"

    async def create(self, body: ApiKeyIn) -> ApiKeyCreated:  # type: ignore[override]
        key = new_key()
        row = await self._create(body, key_sha256=digest(key), key_prefix=key[:_SHOWN])
        return ApiKeyCreated(**msgspec.structs.asdict(_out(row)), key=key)

    def _apply(self, row: ApiKeyRow, body: msgspec.Struct) -> None:
        fields = given(body, _FIELDS)
        if "frontends" in fields:
            fields["frontends"] = list(dict.fromkeys(fields["frontends"]))
        for name, value in fields.items():
            setattr(row, name, value)

    async def _check(self, session: AsyncSession, row: ApiKeyRow) -> None:
        await require_rows(session, FrontendRow, row.frontends, "Frontends", "frontend")

    def _out(self, row: ApiKeyRow) -> ApiKeyOut:
        return _out(row)

    async def _outs(self, session: AsyncSession, rows: Sequence[ApiKeyRow]) -> list[ApiKeyOut]:
        usage = await _live_usage(session, [row.identifier for row in rows])
        return [_out(row, usage.get(row.identifier, _Usage())) for row in rows]


async def _live_usage(session: AsyncSession, identifiers: list[str]) -> dict[str, _Usage]:
    """Key id -> the sums of its live usage rows, for these keys."""
    if not identifiers:
        return {}
    usage = ApiKeyUsageRow
    query: Any = (
        sa.select(
            usage.key_identifier,
            sa.func.sum(usage.requests_total),
            sa.func.sum(usage.rate_limited_total),
            sa.func.max(usage.last_used_utc),
        )
        .where(col(usage.key_identifier) == sa.any_(sa.literal(identifiers, ARRAY(sa.String))))
        .group_by(usage.key_identifier)
    )
    rows: Iterable[Any] = (await session.exec(query)).all()
    return {key: _Usage(int(req or 0), int(lim or 0), last) for key, req, lim, last in rows}
