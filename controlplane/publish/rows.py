"""The configuration rows a publish needs, read incrementally: only rows that changed since the last
read are fetched whole.

Each read asks for every row's identifier and ``xmin`` (the Postgres transaction that wrote the row's
current version: any UPDATE, by any replica or by hand, gives the row a new one), then loads the rows
whose version differs from the cached one. Unchanged rows come back as the very same objects, which
lets the builder keep their views too (``controlplane.publish.builder.ViewMemo``). The caller runs all
of a publish's reads in one REPEATABLE READ transaction, so versions and rows agree.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from sqlalchemy import literal_column
from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

__all__ = ["RowCache"]

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
        identifier = col(self._table.identifier)  # type: ignore[attr-defined]
        # On the session's connection, not through the ORM: a thousand plain (id, version) pairs cost
        # half as much that way, and nothing here needs ORM objects.
        connection = await session.connection()
        versions: dict[str, str] = dict((await connection.execute(select(identifier, _XMIN))).all())  # type: ignore[arg-type]
        stale = [
            i
            for i, version in versions.items()
            if (cached := self._rows.get(i)) is None or cached[0] != version
        ]
        if stale:
            query = select(self._table)
            if len(stale) <= _MAX_LISTED:
                query = query.where(identifier.in_(stale))
            fresh = (await session.exec(query)).all()
            for row in fresh:
                key = row.identifier  # type: ignore[attr-defined]
                self._rows[key] = (versions[key], row)
        for gone in self._rows.keys() - versions.keys():
            del self._rows[gone]
        return [self._rows[i][1] for i in sorted(versions) if i in self._rows]
