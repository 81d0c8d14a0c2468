"""Real PostgreSQL and NATS for tests: given by URL, from testcontainers, or embedded."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
from sqlalchemy.engine import URL, make_url


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
    except Exception:
        return False
    return True


def _sqlalchemy_url(url: str) -> str:
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise ValueError(f"not a PostgreSQL URL: {url}")


def _libpq(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """An empty database of its own on the server of ``server_url`` (a SQLAlchemy URL); dropped after."""
    url = make_url(_sqlalchemy_url(server_url))
    name = "ollamaflow_test_" + uuid.uuid4().hex[:10]
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    database_url = url.set(database=name).render_as_string(hide_password=False)
    try:
        yield database_url
    finally:
        with contextlib.suppress(Exception):
            drop_database(database_url)


def drop_database(database_url: str) -> None:
    """Drop a database at once, terminating the connections to it."""
    url = make_url(database_url)
    with psycopg.connect(_libpq(url.set(database="postgres")), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')


@contextlib.contextmanager
def postgres_database(given_url: str | None, workdir: Path) -> Iterator[str]:
    if given_url:
        with fresh_database(given_url) as url:
            yield url
        return
    if _docker_answers():
        from testcontainers.community.postgres import PostgresContainer

        with (
            PostgresContainer("postgres:16", driver="psycopg") as pg,
            fresh_database(pg.get_connection_url()) as url,
        ):
            yield url
        return
    from ollamaflow.embedded import EmbeddedPostgres

    server = EmbeddedPostgres(workdir / "pgdata")
    server_url = server.start()
    try:
        with fresh_database(server_url) as url:
            yield url
    finally:
        server.stop()


@contextlib.contextmanager
def nats_server(given_url: str | None, workdir: Path) -> Iterator[str]:
    if given_url:
        yield given_url
        return
    if _docker_answers():
        from testcontainers.community.nats import NatsContainer

        with NatsContainer("nats:2.10", jetstream=True) as nc:
            yield nc.nats_uri()
        return
    from ollamaflow.embedded import EmbeddedNats

    server = EmbeddedNats(workdir / "nats")
    url = server.start()
    try:
        yield url
    finally:
        server.stop()
