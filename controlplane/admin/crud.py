"""Storage of one admin resource by identifier, with OllamaFlow's semantics; every resource's service
(frontends, backends, API keys) is a ``Service`` that fills in what differs.

- List: newest first (then by identifier). Read, exists (HEAD) and writes of an unknown id: 404.
- Create (PUT collection): Identifier required (400), duplicate -> 409.
- Replace (PUT item): the body's omitted fields take their defaults; the id comes from the URL.
- Patch: only the given fields change.
- Writes and deletes lock the row (FOR UPDATE); ``require_rows`` share-locks the rows a write names. A
  replace or patch whose new values do not depend on the stored row (``Service._changes``) is instead a
  single ``UPDATE … RETURNING`` in autocommit, which holds the row's lock while it writes.
- A resource may have a cap on its number of rows (``Cap``, a setting): a create beyond it -> 409.

Every committed change calls ``on_change`` (the snapshot publisher's trigger).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, NamedTuple, Protocol, TypeVar, cast

import msgspec
import sqlalchemy as sa
from msgspec import UNSET
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from controlplane.admin.limits import check_fields
from controlplane.clock import Clock
from controlplane.db import Database
from controlplane.errors import ApiError
from controlplane.settings import Settings, env_name
from controlplane.tables import ApiKeyRow, BackendRow, FrontendRow

__all__ = ["Cap", "Service", "constraint_name", "field_names", "given", "require_rows"]

Row = TypeVar("Row", FrontendRow, BackendRow, ApiKeyRow)
Out = TypeVar("Out", bound=msgspec.Struct)

_IDENTIFIER = "_identifier"  # the bound parameter of ``_update_at_once``'s WHERE: no column's name


class _Named(Protocol):
    """A body for create: the resource's fields with its Identifier."""

    identifier: str | None


def field_names(struct: type[msgspec.Struct], *, without: Iterable[str] = ()) -> tuple[str, ...]:
    """The field names of ``struct`` (the Python ones), but those in ``without``."""
    left_out = set(without)
    return tuple(f.name for f in msgspec.structs.fields(struct) if f.name not in left_out)


def given(body: msgspec.Struct, names: Iterable[str]) -> dict[str, Any]:
    """The fields of ``body`` that were set (PATCH leaves the rest UNSET), within the limits that the
    body's types cannot hold (``controlplane.admin.limits``)."""
    fields = {name: value for name in names if (value := getattr(body, name)) is not UNSET}
    check_fields(fields)
    return fields


async def require_rows(
    session: AsyncSession,
    table: type[BackendRow] | type[FrontendRow],
    identifiers: list[str],
    field: str,
    what: str,
) -> None:
    """409 (naming ``field``) unless every id names a row of ``table``: the body is valid, the state it
    refers to is missing. The rows stay share-locked until the commit, so they cannot be deleted under
    the writer."""
    if not identifiers:
        return
    query = select(table.identifier).where(col(table.identifier).in_(identifiers)).with_for_update(read=True)
    found = set((await session.exec(query)).all())
    missing = [i for i in dict.fromkeys(identifiers) if i not in found]
    if missing:
        names = ", ".join(f"'{i}'" for i in missing)
        raise ApiError("Conflict", f"{field}: no {what} with identifier {names}")


def constraint_name(exc: IntegrityError) -> str | None:
    """The name of the constraint or unique index a write broke, as Postgres reports it."""
    diag = getattr(exc.orig, "diag", None)
    return getattr(diag, "constraint_name", None)


class Cap(NamedTuple):
    """How many rows a resource may have, and the setting that says so (for the 409's text)."""

    limit: int
    setting: str

    @classmethod
    def of(cls, settings: Settings, field: str) -> Cap:
        """The cap in the Settings field ``field`` (``max_backends``…)."""
        return cls(getattr(settings, field), env_name(field))


class Service(Generic[Row, Out]):
    """CRUD of the rows of ``table``. A subclass says how a body changes a row (``_apply``), what a
    write must find in other tables (``_check``), what a delete does first (``_before_delete``), and
    how a row is shown (``_out``, or ``_outs`` when that needs the database)."""

    table: type[Row]
    what: str  # the resource in messages: "frontend", "API key"
    a_what: str  # with its article: "a frontend", "an API key"

    def __init__(
        self,
        db: Database,
        *,
        clock: Clock,
        on_change: Callable[[], None],
        cap: Cap | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._on_change = on_change
        self._cap = cap

    async def list(self) -> list[Out]:
        async with self._db.session() as session:
            table = self.table
            query = select(table).order_by(col(table.created_utc).desc(), col(table.identifier))
            return await self._outs(session, (await session.exec(query)).all())

    async def get(self, identifier: str) -> Out:
        async with self._db.session() as session:
            (out,) = await self._outs(session, [await self._row(session, identifier)])
            return out

    async def exists(self, identifier: str) -> bool:
        async with self._db.session() as session:
            return await session.get(self.table, identifier) is not None

    async def create(self, body: _Named) -> Out:
        return self._out(await self._create(body))

    async def replace(self, identifier: str, body: msgspec.Struct) -> Out:
        return await self._update(identifier, body)

    async def patch(self, identifier: str, body: msgspec.Struct) -> Out:
        return await self._update(identifier, body)

    async def delete(self, identifier: str) -> None:
        async with self._db.session() as session:
            row = await self._row(session, identifier, lock=True)
            await self._before_delete(session, row)
            await session.delete(row)
            await self._commit(session, identifier)

    # -- what a resource fills in ------------------------------------------------------------------

    def _apply(self, row: Row, body: msgspec.Struct) -> None:
        """Set the row's fields from ``body`` (only the given ones of a patch)."""
        raise NotImplementedError

    def _changes(self, body: msgspec.Struct) -> dict[str, Any] | None:
        """The columns a replace or patch with ``body`` sets, by name, when none depends on the stored
        row, no ``_check`` applies and ``_out`` shows a row without the database (``_outs`` is not
        used): the write is then a single UPDATE. None (the default): the write reads the row under its
        lock, applies the body to it (``_apply``) and checks it (``_check``). An ApiError here is
        answered by that path too (so an unknown identifier is still a 404 first)."""
        return None

    async def _check(self, session: AsyncSession, row: Row) -> None:
        """Raise ApiError unless the written row may be committed (e.g. the ids it names exist)."""

    async def _before_delete(self, session: AsyncSession, row: Row) -> None:
        """Raise ApiError if the row may not go, or change what refers to it, in the same transaction."""

    def _out(self, row: Row) -> Out:
        raise NotImplementedError

    async def _outs(self, session: AsyncSession, rows: Sequence[Row]) -> list[Out]:
        """The rows as shown; reads and updates call it inside their transaction."""
        return [self._out(row) for row in rows]

    # -- the shared steps --------------------------------------------------------------------------

    async def _create(self, body: _Named, **fields: Any) -> Row:
        """Insert a row for ``body`` (with ``fields`` besides) and return it, committed."""
        if not body.identifier:
            raise ApiError.bad_request(f"Identifier: is required to create {self.a_what}")
        now = self._clock.now()
        row = self.table(identifier=body.identifier, created_utc=now, last_update_utc=now, **fields)
        self._apply(row, body)
        async with self._db.session() as session:
            await self._check_room(session)
            with session.no_autoflush:  # a unique index breaks at the commit, where it is answered
                await self._check(session, row)
            session.add(row)
            await self._commit(session, row.identifier)
        return row

    async def _check_room(self, session: AsyncSession) -> None:
        """409 if the table holds its cap of rows already. Creates of one table take turns on an
        advisory lock (until the commit), so concurrent ones cannot overshoot the cap together."""
        if self._cap is None:
            return
        lock = sa.func.pg_advisory_xact_lock(sa.func.hashtext(f"ollamaflow.cap.{self.table.__tablename__}"))
        await session.scalar(sa.select(lock))
        count = await session.scalar(sa.select(sa.func.count()).select_from(self.table)) or 0
        if count >= self._cap.limit:
            raise ApiError(
                "Conflict",
                f"there are {count} {self.what}s, the most {self._cap.setting}={self._cap.limit} allows; "
                f"delete one first, or raise the setting",
            )

    async def _update(self, identifier: str, body: msgspec.Struct) -> Out:
        try:
            changes = self._changes(body)
        except ApiError:
            changes = None  # answered below, in its order: an unknown identifier is a 404 first
        if changes is not None:
            return await self._update_at_once(identifier, changes)
        async with self._db.session() as session:
            row = await self._row(session, identifier, lock=True)
            self._apply(row, body)
            row.last_update_utc = self._clock.now()
            with session.no_autoflush:  # a unique index breaks at the commit, where it is answered
                await self._check(session, row)
            await self._commit(session, identifier)
            (out,) = await self._outs(session, [row])
            return out

    async def _update_at_once(self, identifier: str, changes: dict[str, Any]) -> Out:
        """``_update`` as one ``UPDATE … RETURNING``, a transaction of its own: as atomic as reading the
        row under its lock and writing it (the statement locks the row while it writes it), in one round
        trip instead of four (BEGIN, SELECT … FOR UPDATE, UPDATE, COMMIT). Through SQLAlchemy Core, with
        a statement built once: the ORM's bulk-update machinery cost about a millisecond a write."""
        statement = self._update_statement
        unknown = changes.keys() - statement.table.c.keys()  # type: ignore[attr-defined]
        if unknown:  # the SET clause comes from the parameters' names: none may go astray
            raise ValueError(f"no {self.what} column {', '.join(sorted(unknown))}")
        values = {**changes, "last_update_utc": self._clock.now(), _IDENTIFIER: identifier}
        async with self._db.autocommit_connection() as conn:
            try:
                found = (await conn.execute(statement, values)).one_or_none()
            except IntegrityError as exc:
                raise self._conflict(exc, identifier) from None
            if found is not None:
                self._on_change()  # committed: the publisher may start now
        if found is None:
            raise ApiError.not_found(self.what, identifier)
        # A row of every column of the table, with the column types' conversions (secrets opened) as
        # the ORM's: ``_out`` reads it by attribute as it reads a table row.
        return self._out(cast(Row, found))

    @functools.cached_property
    def _update_statement(self) -> sa.Update:
        """``UPDATE <table> SET <the parameters' columns> WHERE identifier = :_identifier RETURNING *``."""
        table: sa.Table = self.table.__table__  # type: ignore[attr-defined]
        return table.update().where(table.c.identifier == sa.bindparam(_IDENTIFIER)).returning(*table.c)

    async def _row(self, session: AsyncSession, identifier: str, *, lock: bool = False) -> Row:
        row = await session.get(self.table, identifier, with_for_update=lock)
        if row is None:
            raise ApiError.not_found(self.what, identifier)
        return row

    async def _commit(self, session: AsyncSession, identifier: str) -> None:
        try:
            await session.commit()
        except IntegrityError as exc:
            await session.rollback()
            raise self._conflict(exc, identifier) from None
        self._on_change()

    def _conflict(self, exc: IntegrityError, identifier: str) -> ApiError:
        """The answer to a unique constraint the commit broke: by default, the identifier's."""
        return ApiError("Conflict", f"{self.what} '{identifier}' already exists")
