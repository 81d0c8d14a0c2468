"""The propagation scenario's cluster: NATS, PostgreSQL, simulators, a control plane and data planes as
processes, the backends and frontends created through the admin API, then the samples
(``ollamaflow.bench.propagation``) taken on it."""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
from sqlalchemy.engine import make_url

from controlplane.settings import sqlalchemy_url
from ollamaflow.bench.cluster import CLI, free_port, process, wait_ready
from ollamaflow.bench.cluster import nats as nats_server
from ollamaflow.bench.propagation import (
    FLIP,
    PER_FRONTEND,
    TOKEN,
    Applied,
    PropagationOptions,
    PropagationReport,
    Sampler,
    figures,
    progress,
)
from shared.bus import Bus, BusNames
from shared.signing_keys import ensure_key_pair
from shared.snapshot import decode

__all__ = ["run_propagation"]


async def _populate(
    admin: httpx.AsyncClient, options: PropagationOptions, sim_ports: list[int], flip_port: int
) -> int:
    limit = asyncio.Semaphore(8)

    async def put(path: str, body: dict[str, object]) -> None:
        async with limit:
            resp = await admin.put(path, json=body)
            if resp.status_code not in (200, 201):
                raise RuntimeError(f"PUT {path} answered {resp.status_code}: {resp.text[:300]}")

    ids = [f"b{i:05d}" for i in range(options.backends)]
    await asyncio.gather(
        *(
            put(
                "/v1.0/backends",
                {"Identifier": ident, "Hostname": "127.0.0.1", "Port": sim_ports[i % len(sim_ports)]},
            )
            for i, ident in enumerate(ids)
        )
    )
    await put(
        "/v1.0/backends",
        {
            "Identifier": FLIP,
            "Hostname": "127.0.0.1",
            "Port": flip_port,
            "HealthCheckIntervalMs": 100,
            "UnhealthyThreshold": 1,
            "HealthyThreshold": 1,
        },
    )
    frontends = math.ceil(len(ids) / PER_FRONTEND)
    await asyncio.gather(
        *(
            put(
                "/v1.0/frontends",
                {
                    "Identifier": f"f{f:04d}",
                    "Hostname": f"f{f}.bench.test",
                    "Backends": ids[f * PER_FRONTEND : (f + 1) * PER_FRONTEND] + ([FLIP] if f == 0 else []),
                },
            )
            for f in range(frontends)
        )
    )
    return frontends


async def _measure(
    options: PropagationOptions,
    nats_url: str,
    cp_url: str,
    namespace: str,
    dataplane_ids: list[str],
    sim_ports: list[int],
    flip_port: int,
    flip: Callable[[bool], None],
) -> PropagationReport:
    bus = Bus(nats_url, BusNames(namespace), client_name="ollamaflow-bench")
    await bus.connect()
    applied = Applied(dataplane_ids)
    await bus.subscribe_reports(applied.on_report)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    try:
        async with httpx.AsyncClient(base_url=cp_url, headers=headers, timeout=30) as admin:
            started = time.monotonic()
            frontends = await _populate(admin, options, sim_ports, flip_port)
            progress(f"created {options.backends + 1} backends in {time.monotonic() - started:.1f} s")
            cluster = Sampler(options, admin, bus, nats_url, applied, flip)

            async def settled() -> bool:
                stored = await bus.read_snapshot()
                if stored is None:
                    return False
                snapshot = decode(stored[0])
                waiting = [b.id for b in snapshot.content.backends if not (b.health_checked and b.healthy)]
                progress(
                    f"{len(snapshot.content.backends)} backends in revision {snapshot.revision}, "
                    f"{len(waiting)} not healthy yet"
                )
                return len(snapshot.content.backends) == options.backends + 1 and not waiting

            deadline = time.monotonic() + 120 + options.backends * 0.05
            while not await settled():
                if time.monotonic() > deadline:
                    raise RuntimeError("the backends did not all become healthy in the snapshot")
                await asyncio.sleep(0.5)
            await cluster.quiet()
            stored = await bus.read_snapshot()
            size = len(stored[0]) if stored else 0

            writes, skipped_writes = [], 0
            for sample in range(options.samples):
                took = await cluster.admin_write(sample)
                if took is None:
                    skipped_writes += 1
                else:
                    writes.append(took)
            changes, skipped_changes = [], 0
            for sample in range(options.health_samples):
                took = await cluster.health_change(healthy=sample % 2 == 1)
                if took is None:
                    skipped_changes += 1
                else:
                    changes.append(took)
            return PropagationReport(
                backends=options.backends,
                frontends=frontends,
                dataplanes=options.dataplanes,
                snapshot_bytes=size,
                admin_write=figures(writes, skipped_writes),
                health_change=figures(changes, skipped_changes),
            )
    finally:
        await bus.close()


@contextlib.contextmanager
def _postgres(given: str | None, workdir: Path) -> Iterator[str]:
    if given:
        with _scratch_database(given) as url:
            yield url
        return
    from ollamaflow.embedded import EmbeddedPostgres

    server = EmbeddedPostgres(workdir / "pg", durable=False)
    try:
        yield server.start()
    finally:
        server.stop()


@contextlib.contextmanager
def _scratch_database(server_url: str) -> Iterator[str]:
    """A database of the bench's own on the server of ``server_url``, dropped after: the bench
    creates a thousand backends, which must never land among a deployment's own (and a second run
    would meet the first's)."""
    url = make_url(sqlalchemy_url(server_url))
    libpq = url.set(drivername="postgresql").render_as_string(hide_password=False)
    name = "ollamaflow_bench_" + uuid.uuid4().hex[:10]
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(libpq, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_propagation(options: PropagationOptions) -> PropagationReport:
    namespace = "bench" + uuid.uuid4().hex[:8]
    cp_port, flip_port = free_port(), free_port()
    sim_ports = [free_port() for _ in range(max(1, options.sims))]
    dp_ports = [free_port() for _ in range(options.dataplanes)]
    dataplane_ids = [f"bench-dp-{i}" for i in range(options.dataplanes)]
    with (
        tempfile.TemporaryDirectory(prefix="ollamaflow-bench-") as tmp,
        nats_server(options.nats_url, Path(tmp)) as nats_url,
        _postgres(options.database_url, Path(tmp)) as database_url,
        contextlib.ExitStack() as stack,
    ):
        work = Path(tmp)
        # Signed as in production: the signature's cost is part of what is measured.
        private, public = ensure_key_pair(work / "keys")
        base_env = {
            "OLLAMAFLOW_NATS_URL": nats_url,
            "OLLAMAFLOW_BUS_NAMESPACE": namespace,
            "OLLAMAFLOW_LOG_LEVEL": "WARNING" if options.logs is None else "INFO",
        }
        for i, port in enumerate(sim_ports):
            log = work / f"sim{i}.log"
            sim = stack.enter_context(process([*CLI, "sim", "--port", str(port)], log))
            wait_ready(f"http://127.0.0.1:{port}/api/version", sim, log, "simulator")

        flip_log = work / "flip.log"
        flipper = contextlib.ExitStack()
        stack.callback(flipper.close)

        def flip(up: bool) -> None:
            if up:
                sim = flipper.enter_context(process([*CLI, "sim", "--port", str(flip_port)], flip_log))
                wait_ready(f"http://127.0.0.1:{flip_port}/api/version", sim, flip_log, "simulator")
            else:
                flipper.close()

        flip(True)
        cp_log = work / "controlplane.log"
        cp_env = {
            **base_env,
            "OLLAMAFLOW_DATABASE_URL": database_url,
            "OLLAMAFLOW_ADMIN_TOKENS": TOKEN,
            "OLLAMAFLOW_SNAPSHOT_SIGNING_KEY_FILE": str(private),
            "OLLAMAFLOW_HEALTH_INTERVAL": str(options.health_interval),
        }
        cp = stack.enter_context(
            process([*CLI, "controlplane", "--host", "127.0.0.1", "--port", str(cp_port)], cp_log, cp_env)
        )
        cp_url = f"http://127.0.0.1:{cp_port}"
        wait_ready(cp_url + "/readyz", cp, cp_log, "control plane", timeout=60)
        for ident, port in zip(dataplane_ids, dp_ports, strict=True):
            log = work / f"{ident}.log"
            env = {
                **base_env,
                "OLLAMAFLOW_DATAPLANE_ID": ident,
                "OLLAMAFLOW_SNAPSHOT_PUBLIC_KEY_FILES": str(public),
            }
            dp = stack.enter_context(
                process([*CLI, "dataplane", "--host", "127.0.0.1", "--port", str(port)], log, env)
            )
            wait_ready(f"http://127.0.0.1:{port}/readyz", dp, log, "data plane")
        try:
            return asyncio.run(
                _measure(options, nats_url, cp_url, namespace, dataplane_ids, sim_ports, flip_port, flip)
            )
        finally:
            if options.logs is not None:
                shutil.copytree(
                    work, options.logs, dirs_exist_ok=True, ignore=shutil.ignore_patterns("nats", "pg")
                )
