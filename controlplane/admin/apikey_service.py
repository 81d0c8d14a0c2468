"""Client API keys, with the frontend and backend routes' semantics.

- Create (PUT collection): Identifier required (400), duplicate -> 409. The server generates the key,
  ``ofk_`` and 32 random bytes (URL-safe base64), and shows it in the create answer only; the database
  keeps its SHA-256 and its first characters (``KeyPrefix``, to tell keys apart).
- Replace (PUT item) and patch change the settings; the key stays the same.
- ``Frontends`` may only name existing frontends (400), which stay share-locked until the commit; a
  deleted frontend leaves every key's list (``FrontendService.delete``).
- Usage: the counters folded into the key's row plus the live rows of ``apikey_usage``
  (``controlplane.apikey_usage``), summed.

Every committed change calls ``on_change`` (the snapshot publisher's trigger).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import msgspec
import sqlalchemy as sa
from msgspec import UNSET
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from controlplane.admin.schemas import ApiKeyCreated, ApiKeyIn, ApiKeyOut
from controlplane.admin.service import Service, require_rows
from controlplane.errors import ApiError
from controlplane.tables import ApiKeyRow, ApiKeyUsageRow, FrontendRow
from shared.credentials import digest

__all__ = ["KEY_PREFIX", "ApiKeyService", "new_key"]

KEY_PREFIX = "ofk_"
_SHOWN = len(KEY_PREFIX) + 8  # characters of a key kept for display: 48 of its 256 random bits
_FIELDS = tuple(f.name for f in msgspec.structs.fields(ApiKeyIn) if f.name != "identifier")
_OUT = tuple(
    f.name
    for f in msgspec.structs.fields(ApiKeyOut)
    if f.name not in ("requests_total", "rate_limited_total", "last_used_utc")
)


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


def _given(body: msgspec.Struct) -> dict[str, Any]:
    fields = {name: value for name in _FIELDS if (value := getattr(body, name)) is not UNSET}
    if "frontends" in fields:
        fields["frontends"] = list(dict.fromkeys(fields["frontends"]))
    return fields


class ApiKeyService(Service):
    """CRUD of API keys."""

    async def list(self) -> list[ApiKeyOut]:
        async with self._db.session() as session:
            query = select(ApiKeyRow).order_by(col(ApiKeyRow.created_utc).desc(), col(ApiKeyRow.identifier))
            rows = (await session.exec(query)).all()
            usage = await _live_usage(session, None)
        return [_out(row, usage.get(row.identifier, _Usage())) for row in rows]

    async def get(self, identifier: str) -> ApiKeyOut:
        async with self._db.session() as session:
            row = await self._row(session, identifier)
            usage = await _live_usage(session, identifier)
        return _out(row, usage.get(identifier, _Usage()))

    async def exists(self, identifier: str) -> bool:
        async with self._db.session() as session:
            return await session.get(ApiKeyRow, identifier) is not None

    async def create(self, body: ApiKeyIn) -> ApiKeyCreated:
        if not body.identifier:
            raise ApiError.bad_request("Identifier: is required to create an API key")
        key = new_key()
        now = self._clock.now()
        row = ApiKeyRow(
            identifier=body.identifier,
            key_sha256=digest(key),
            key_prefix=key[:_SHOWN],
            created_utc=now,
            last_update_utc=now,
            **_given(body),
        )
        async with self._db.session() as session:
            await require_rows(session, FrontendRow, row.frontends, "Frontends", "frontend")
            session.add(row)
            await self._commit(session, "API key", row.identifier)
        out = _out(row)
        return ApiKeyCreated(**{f: getattr(out, f) for f in out.__struct_fields__}, key=key)

    async def replace(self, identifier: str, body: ApiKeyIn) -> ApiKeyOut:
        return await self._update(identifier, body)

    async def patch(self, identifier: str, body: msgspec.Struct) -> ApiKeyOut:
        return await self._update(identifier, body)

    async def delete(self, identifier: str) -> None:
        async with self._db.session() as session:
            await session.delete(await self._row(session, identifier, lock=True))
            await self._commit(session, "API key", identifier)

    async def _update(self, identifier: str, body: msgspec.Struct) -> ApiKeyOut:
        async with self._db.session() as session:
            row = await self._row(session, identifier, lock=True)
            for name, value in _given(body).items():
                setattr(row, name, value)
            row.last_update_utc = self._clock.now()
            await require_rows(session, FrontendRow, row.frontends, "Frontends", "frontend")
            await self._commit(session, "API key", identifier)
            usage = await _live_usage(session, identifier)
            return _out(row, usage.get(identifier, _Usage()))

    @staticmethod
    async def _row(session: AsyncSession, identifier: str, *, lock: bool = False) -> ApiKeyRow:
        row = await session.get(ApiKeyRow, identifier, with_for_update=lock)
        if row is None:
            raise ApiError.not_found("API key", identifier)
        return row


async def _live_usage(session: AsyncSession, identifier: str | None) -> dict[str, _Usage]:
    """Key id -> the sums of its live usage rows (one key, or all with None)."""
    usage = ApiKeyUsageRow
    query: Any = sa.select(
        usage.key_identifier,
        sa.func.sum(usage.requests_total),
        sa.func.sum(usage.rate_limited_total),
        sa.func.max(usage.last_used_utc),
    ).group_by(usage.key_identifier)
    if identifier is not None:
        query = query.where(col(usage.key_identifier) == identifier)
    rows: Iterable[Any] = (await session.exec(query)).all()
    return {key: _Usage(int(req or 0), int(lim or 0), last) for key, req, lim, last in rows}
