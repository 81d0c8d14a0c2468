"""The embedded PostgreSQL and NATS servers: start, answer, stop, restart with their state kept."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import nats
import psycopg
import pytest

from ollamaflow.embedded import EmbeddedNats, EmbeddedPostgres, EmbeddedServerError, find_nats_server
from ollamaflow.processes import process_is_live


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def test_postgres_answers_and_keeps_data_across_restart(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path / "pg", durable=False)
    url = server.start()
    assert url.startswith("postgresql+psycopg://postgres@127.0.0.1:")
    assert url.endswith(f":{server.port}/postgres")
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (v text)")
        conn.execute("INSERT INTO kept VALUES ('still here')")
    first_pid = server.pid
    assert first_pid is not None
    server.stop()
    assert not process_is_live(first_pid)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(_libpq(url), connect_timeout=2)

    assert server.start() == url  # same port, same data directory, no second initdb
    with psycopg.connect(_libpq(url)) as conn:
        assert conn.execute("SELECT v FROM kept").fetchall() == [("still here",)]
    server.stop()


def test_postgres_context_manager_and_stale_pid_file(tmp_path: Path) -> None:
    data = tmp_path / "pg"
    with EmbeddedPostgres(data, durable=False) as server:
        port = server.port
    # A crash leaves postmaster.pid behind, and its pid may by now belong to an unrelated process of
    # the same account, which alone would make postgres refuse to start.
    owner = data.stat()
    as_owner = {"user": owner.st_uid, "group": owner.st_gid} if os.geteuid() == 0 else {}
    squatter = subprocess.Popen(["sleep", "60"], **as_owner)
    try:
        (data / "postmaster.pid").write_text(f"{squatter.pid}\n{data}\n0\n{port}\n\n127.0.0.1\n0 0\nready\n")
        with EmbeddedPostgres(data, durable=False) as server, psycopg.connect(_libpq(server.url)) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert squatter.poll() is None  # an unrelated process is left alone
    finally:
        squatter.kill()
        squatter.wait()


def test_postgres_does_not_need_its_parent_directories_to_stay_open(tmp_path: Path) -> None:
    # As root, postgres runs under another account. pytest makes its temp root private again whenever
    # another session starts; the server must keep working (a checkpoint rewrites global/pg_control).
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    with EmbeddedPostgres(private / "pg", durable=False) as server:
        private.chmod(0o700)
        tmp_path.chmod(0o700)
        with psycopg.connect(_libpq(server.url), autocommit=True) as conn:
            conn.execute("CREATE TABLE t (x int)")
            conn.execute("CHECKPOINT")
            assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
        server.stop()
        assert server.start() == server.url


def test_postgres_port_taken_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = EmbeddedPostgres(tmp_path / "pg", port=taken.getsockname()[1], durable=False)
        with pytest.raises(EmbeddedServerError, match="failed to start"):
            server.start()
    assert not server.running


def test_postgres_refuses_a_foreign_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "pg").mkdir()
    (tmp_path / "pg" / "something").write_text("not a cluster")
    with pytest.raises(EmbeddedServerError, match="neither empty"):
        EmbeddedPostgres(tmp_path / "pg").start()


async def test_nats_jetstream_answers_and_keeps_kv_across_restart(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path / "nats")
    url = server.start()
    assert url == f"nats://127.0.0.1:{server.port}"
    assert server.monitor_port not in (None, server.port)
    nc = await nats.connect(url)
    kv = await nc.jetstream().create_key_value(bucket="embedded_test")
    await kv.put("greeting", b"hello")
    assert (await kv.get("greeting")).value == b"hello"
    await nc.close()

    server.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()

    assert server.start() == url  # same port and store: clients configured with it reconnect
    nc = await nats.connect(url)
    kv = await nc.jetstream().key_value("embedded_test")
    assert (await kv.get("greeting")).value == b"hello"
    await nc.close()
    server.stop()
    assert not server.running


def test_nats_binary_is_found() -> None:
    assert find_nats_server().is_file()
