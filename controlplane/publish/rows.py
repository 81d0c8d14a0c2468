"""The configuration rows a publish needs, read incrementally: only rows that changed since the last
read are fetched whole.

Each read asks for every row's identifier and ``xmin`` (the Postgres transaction that wrote the row's
current version: any UPDATE, by any replica or by hand, gives the row a new one), then loads the rows
whose version differs from the cached one. Unchanged rows come back as the very same objects, which
lets the builder keep their views too (``controlplane.publish.builder.ViewMemo``). The caller runs all
of a publish's reads in one REPEATABLE READ transaction, so versions and rows agree.
"""

from __future__ import annotations

import functools
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, literal_column, union_all
from sqlalchemy.dialects import postgresql
from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

__all__ = ["RowCache", "read_tables"]

Row = TypeVar("Row", bound=SQLModel)
_XMIN = literal_column("xmin::text")
_MAX_LISTED = 1000  # more changed rows than this: read them all rather than list their identifiers


class RowCache(Generic[Row]):
    """The rows of one table keyed by ``identifier``, with the version each was read at."""

    def __init__(self, table: type[Row]) -> None:
        self._table = table
        self._rows: dict[str, tuple[str, Row]] = {}

    async def read(self, session: AsyncSession) -> list[Row]:
        """Every row of the table, in identifier order; only changed or new ones are fetched whole."""
        return (await read_tables(session, self))[0]

    def _query(self, tag: int) -> Select[Any]:
        """This table's (tag, identifier, version) triples."""
        return select(literal_column(str(tag)), self._identifier(), _XMIN)  # type: ignore[call-overload, no-any-return]

    def _identifier(self) -> Any:
        return col(self._table.identifier)  # type: ignore[attr-defined]

    async def _load(self, session: AsyncSession, versions: dict[str, str]) -> list[Row]:
        stale = [
            i
            for i, version in versions.items()
            if (cached := self._rows.get(i)) is None or cached[0] != version
        ]
        if stale:
            query = select(self._table)
            if len(stale) <= _MAX_LISTED:
                query = query.where(self._identifier().in_(stale))
            fresh = (await session.exec(query)).all()
            for row in fresh:
                key = row.identifier  # type: ignore[attr-defined]
                self._rows[key] = (versions[key], row)
        for gone in self._rows.keys() - versions.keys():
            del self._rows[gone]
        return [self._rows[i][1] for i in sorted(versions) if i in self._rows]


async def read_tables(session: AsyncSession, *caches: RowCache[Any]) -> list[list[Any]]:
    """``RowCache.read`` of each of ``caches``, with one query for the versions of all their tables.

    The versions are read on the session's own driver connection (so in its transaction), as plain
    tuples: through the ORM a thousand (id, version) pairs cost four times as much (about 2 ms of the
    control plane's time on every publish), and one statement for all tables saves a round trip per table.
    """
    connection = await session.connection()
    driver = (await connection.get_raw_connection()).driver_connection
    versions: list[dict[str, str]] = [{} for _ in caches]
    async with driver.cursor() as cursor:  # type: ignore[union-attr]
        await cursor.execute(_versions_sql(tuple(cache._table for cache in caches)))
        for tag, identifier, version in await cursor.fetchall():
            versions[tag][identifier] = version
    return [await cache._load(session, found) for cache, found in zip(caches, versions, strict=True)]


@functools.cache
def _versions_sql(tables: tuple[type[SQLModel], ...]) -> str:
    """The statement for every row's (tag, identifier, version) in ``tables``, tagged by position:
    plain SQL without parameters, compiled once."""
    query = union_all(*(RowCache(table)._query(tag) for tag, table in enumerate(tables)))
    return str(query.compile(dialect=postgresql.psycopg.dialect()))
