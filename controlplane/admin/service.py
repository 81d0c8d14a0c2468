"""Frontend and backend storage with OllamaFlow's semantics, plus the checks OllamaFlow lacks.

- Create (PUT collection): Identifier required (400), duplicate -> 409.
- Replace (PUT item): the body's omitted fields take their defaults; the id comes from the URL.
- Patch: only the given fields change.
- A frontend may only name existing backends (400); a backend named by a frontend cannot be deleted
  (409 InUse). Row locks make both checks hold under concurrent requests: writers of a frontend take
  FOR SHARE on the backends it names, a backend delete takes FOR UPDATE on its row.
- A deleted frontend leaves the ``Frontends`` of every API key (``controlplane.admin.apikey_service``)
  in the same transaction.

Every committed change calls ``on_change`` (the snapshot publisher's trigger).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import msgspec
import sqlalchemy as sa
from msgspec import UNSET
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from controlplane.admin.schemas import BackendIn, BackendOut, FrontendIn, FrontendOut
from controlplane.clock import Clock
from controlplane.db import Database
from controlplane.errors import ApiError
from controlplane.publish.builder import backend_base_url
from controlplane.tables import ApiKeyRow, BackendRow, FrontendRow

__all__ = ["BackendService", "FrontendService", "Service", "require_rows"]

_FRONTEND_FIELDS = tuple(f.name for f in msgspec.structs.fields(FrontendIn) if f.name != "identifier")
_BACKEND_FIELDS = tuple(
    f.name for f in msgspec.structs.fields(BackendIn) if f.name not in ("identifier", "bearer_token")
)
_FRONTEND_OUT = tuple(f.name for f in msgspec.structs.fields(FrontendOut))
_BACKEND_OUT = tuple(
    f.name for f in msgspec.structs.fields(BackendOut) if f.name not in ("has_bearer_token", "url_prefix")
)


def _given(body: msgspec.Struct, names: Iterable[str]) -> dict[str, Any]:
    """The fields of ``body`` that were set (PATCH leaves the rest UNSET)."""
    return {name: value for name in names if (value := getattr(body, name)) is not UNSET}


def _frontend_fields(body: msgspec.Struct) -> dict[str, Any]:
    """The given frontend fields, sticky header names lower-cased and without repeats (HTTP header
    names are case-insensitive; the data plane compares them lower-case)."""
    fields = _given(body, _FRONTEND_FIELDS)
    if "sticky_headers" in fields:
        fields["sticky_headers"] = list(dict.fromkeys(name.lower() for name in fields["sticky_headers"]))
    return fields


def frontend_out(row: FrontendRow) -> FrontendOut:
    return FrontendOut(**{name: getattr(row, name) for name in _FRONTEND_OUT})


def backend_out(row: BackendRow) -> BackendOut:
    return BackendOut(
        **{name: getattr(row, name) for name in _BACKEND_OUT},
        has_bearer_token=bool(row.bearer_token),
        url_prefix=backend_base_url(row.hostname, row.port, row.ssl),
    )


class Service:
    def __init__(self, db: Database, *, clock: Clock, on_change: Callable[[], None]) -> None:
        self._db = db
        self._clock = clock
        self._on_change = on_change

    async def _commit(self, session: AsyncSession, what: str, identifier: str) -> None:
        try:
            await session.commit()
        except IntegrityError:
            await session.rollback()
            raise ApiError("Conflict", f"{what} '{identifier}' already exists") from None
        self._on_change()


class FrontendService(Service):
    """CRUD of frontends."""

    async def list(self) -> list[FrontendOut]:
        async with self._db.session() as session:
            query = select(FrontendRow).order_by(
                col(FrontendRow.created_utc).desc(), col(FrontendRow.identifier)
            )
            return [frontend_out(row) for row in (await session.exec(query)).all()]

    async def get(self, identifier: str) -> FrontendOut:
        async with self._db.session() as session:
            return frontend_out(await self._row(session, identifier))

    async def exists(self, identifier: str) -> bool:
        async with self._db.session() as session:
            return await session.get(FrontendRow, identifier) is not None

    async def create(self, body: FrontendIn) -> FrontendOut:
        if not body.identifier:
            raise ApiError.bad_request("Identifier: is required to create a frontend")
        now = self._clock.now()
        row = FrontendRow(
            identifier=body.identifier, created_utc=now, last_update_utc=now, **_frontend_fields(body)
        )
        async with self._db.session() as session:
            await _require_backends(session, row.backends)
            session.add(row)
            await self._commit(session, "frontend", row.identifier)
        return frontend_out(row)

    async def replace(self, identifier: str, body: FrontendIn) -> FrontendOut:
        return await self._update(identifier, body)

    async def patch(self, identifier: str, body: msgspec.Struct) -> FrontendOut:
        return await self._update(identifier, body)

    async def delete(self, identifier: str) -> None:
        async with self._db.session() as session:
            await session.delete(await self._row(session, identifier, lock=True))
            await _unlist_frontend(session, identifier, self._clock.now())
            await self._commit(session, "frontend", identifier)

    async def _update(self, identifier: str, body: msgspec.Struct) -> FrontendOut:
        async with self._db.session() as session:
            row = await self._row(session, identifier, lock=True)
            for name, value in _frontend_fields(body).items():
                setattr(row, name, value)
            row.last_update_utc = self._clock.now()
            await _require_backends(session, row.backends)
            await self._commit(session, "frontend", identifier)
            return frontend_out(row)

    @staticmethod
    async def _row(session: AsyncSession, identifier: str, *, lock: bool = False) -> FrontendRow:
        row = await session.get(FrontendRow, identifier, with_for_update=lock)
        if row is None:
            raise ApiError.not_found("frontend", identifier)
        return row


async def _unlist_frontend(session: AsyncSession, identifier: str, now: datetime) -> None:
    """Take a frontend being deleted out of every API key's Frontends (so that a frontend created later
    under the same id is not opened to them)."""
    frontends = col(ApiKeyRow.frontends)
    statement = (
        sa.update(ApiKeyRow)
        .where(frontends.contains([identifier]))
        .values(frontends=frontends.op("-")(sa.literal(identifier, sa.Text)), last_update_utc=now)
        .execution_options(synchronize_session=False)
    )
    await session.exec(statement)


async def _require_backends(session: AsyncSession, identifiers: list[str]) -> None:
    await require_rows(session, BackendRow, identifiers, "Backends", "backend")


async def require_rows(
    session: AsyncSession,
    table: type[BackendRow] | type[FrontendRow],
    identifiers: list[str],
    field: str,
    what: str,
) -> None:
    """400 (naming ``field``) unless every id names a row of ``table``; the rows stay share-locked
    until the commit, so they cannot be deleted under the writer."""
    if not identifiers:
        return
    query = (
        select(table.identifier).where(col(table.identifier).in_(identifiers)).with_for_update(read=True)
    )
    found = set((await session.exec(query)).all())
    missing = [i for i in dict.fromkeys(identifiers) if i not in found]
    if missing:
        names = ", ".join(f"'{i}'" for i in missing)
        raise ApiError.bad_request(f"{field}: no {what} with identifier {names}")


class BackendService(Service):
    """CRUD of backends. The bearer token is write-only."""

    async def list(self) -> list[BackendOut]:
        async with self._db.session() as session:
            query = select(BackendRow).order_by(
                col(BackendRow.created_utc).desc(), col(BackendRow.identifier)
            )
            return [backend_out(row) for row in (await session.exec(query)).all()]

    async def get(self, identifier: str) -> BackendOut:
        async with self._db.session() as session:
            return backend_out(await self._row(session, identifier))

    async def exists(self, identifier: str) -> bool:
        async with self._db.session() as session:
            return await session.get(BackendRow, identifier) is not None

    async def create(self, body: BackendIn) -> BackendOut:
        if not body.identifier:
            raise ApiError.bad_request("Identifier: is required to create a backend")
        now = self._clock.now()
        row = BackendRow(identifier=body.identifier, created_utc=now, last_update_utc=now)
        self._apply(row, body, now)
        async with self._db.session() as session:
            session.add(row)
            await self._commit(session, "backend", row.identifier)
        return backend_out(row)

    async def replace(self, identifier: str, body: BackendIn) -> BackendOut:
        return await self._update(identifier, body)

    async def patch(self, identifier: str, body: msgspec.Struct) -> BackendOut:
        return await self._update(identifier, body)

    async def delete(self, identifier: str) -> None:
        async with self._db.session() as session:
            row = await self._row(session, identifier, lock=True)
            query = select(FrontendRow.identifier).where(col(FrontendRow.backends).contains([identifier]))
            users = sorted((await session.exec(query)).all())
            if users:
                names = ", ".join(f"'{u}'" for u in users)
                raise ApiError(
                    "InUse",
                    f"backend '{identifier}' is listed in the Backends of frontend {names}; "
                    "remove it there first",
                )
            await session.delete(row)
            await self._commit(session, "backend", identifier)

    async def _update(self, identifier: str, body: msgspec.Struct) -> BackendOut:
        async with self._db.session() as session:
            row = await self._row(session, identifier, lock=True)
            self._apply(row, body, self._clock.now())
            await self._commit(session, "backend", identifier)
            return backend_out(row)

    @staticmethod
    def _apply(row: BackendRow, body: msgspec.Struct, now: datetime) -> None:
        for name, value in _given(body, _BACKEND_FIELDS).items():
            setattr(row, name, value)
        token = getattr(body, "bearer_token", UNSET)
        if token is not UNSET:  # omitted keeps the stored token; null or "" clears it
            row.bearer_token = token or None
        row.last_update_utc = now

    @staticmethod
    async def _row(session: AsyncSession, identifier: str, *, lock: bool = False) -> BackendRow:
        row = await session.get(BackendRow, identifier, with_for_update=lock)
        if row is None:
            raise ApiError.not_found("backend", identifier)
        return row
