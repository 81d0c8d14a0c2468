"""The database edge: one async engine (psycopg), sessions, and the snapshot revision sequence."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

__all__ = ["Database"]


class Database:
    """The configuration database, shared by the admin services and the snapshot publisher."""

    def __init__(self, url: str, *, pool_size: int = 5, connect_timeout: float = 5.0) -> None:
        self.url = url
        self.engine: AsyncEngine = create_async_engine(
            url,
            pool_size=pool_size,
            pool_pre_ping=True,  # survive a Postgres restart without a failed request
            hide_parameters=True,  # statements carry bearer tokens: keep them out of errors and logs
            connect_args={"connect_timeout": max(1, round(connect_timeout))},
        )
        self._sessions = async_sessionmaker(self.engine, class_=AsyncSession, expire_on_commit=False)
        # The same pool, its connections in autocommit while checked out through it: each statement a
        # transaction of its own, with no BEGIN and COMMIT round trips around it.
        self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session whose transaction the caller commits; rolled back on error."""
        async with self._sessions() as session:
            yield session

    @asynccontextmanager
    async def autocommit_connection(self) -> AsyncIterator[AsyncConnection]:
        """A connection each statement on which is a transaction of its own, committed once it answers:
        for a write that is a single statement, which then costs no BEGIN and no COMMIT round trip."""
        async with self._autocommit.connect() as conn:
            yield conn

    async def ping(self) -> None:
        """Raise if the database does not answer."""
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def next_revision(self, *, at_least: int) -> int:
        """The next snapshot revision: the sequence's next value, but never below ``at_least``.

        ``at_least`` is one more than the revision already stored on the bus, so a database restored
        from an older backup cannot make the published revision go backwards.
        """
        async with self.engine.begin() as conn:
            value = (await conn.execute(text("SELECT nextval('snapshot_revision')"))).scalar_one()
            if value < at_least:
                value = (
                    await conn.execute(text("SELECT setval('snapshot_revision', :v)"), {"v": at_least})
                ).scalar_one()
            return int(value)

    async def close(self) -> None:
        await self.engine.dispose()
