"""A backend's model lists are bounded: a huge /api/tags cannot bloat the snapshot every data plane
receives, and the admin health view says how much was left out."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx

from controlplane.health.inventory import MAX_INVENTORY_BYTES, MAX_MODELS
from controlplane.settings import Settings
from ollamaflow.sim import running_sim
from shared.snapshot import Snapshot
from tests.controlplane.harness import watch_snapshots
from tests.controlplane.monitoring_support import backend, port_of


async def test_a_backend_listing_40000_models_publishes_the_first_4096_and_says_how_many_were_dropped(
    probing_admin: httpx.AsyncClient, monitoring: Settings
) -> None:
    names = tuple(f"model{i:05d}:latest" for i in range(40_000))
    async with (
        running_sim(models=names) as sim,
        watch_snapshots(monitoring.nats_url, monitoring.bus_namespace) as watch,
    ):
        resp = await probing_admin.put(
            "/v1.0/backends", json={"Identifier": "many", "Hostname": "127.0.0.1", "Port": port_of(sim)}
        )
        assert resp.status_code == 201, resp.text

        def listed(s: Snapshot) -> bool:
            view = backend(s, "many")
            return bool(view and view.models_known)

        snapshot = await watch.next(listed, within=30)
        view = backend(snapshot, "many")
        assert view is not None
        assert view.models == tuple(sorted(names))[:MAX_MODELS]
        health = (await probing_admin.get("/v1.0/backends/many/health")).json()
        assert health["ModelsDropped"] == 40_000 - MAX_MODELS
        assert len(health["Models"]) == MAX_MODELS and health["ModelsError"] == ""
        # The next admin write still reaches the bus.
        await probing_admin.patch("/v1.0/backends/many", json={"Name": "still publishing"})
        renamed = await watch.next(
            lambda s: (b := backend(s, "many")) is not None and b.name == "still publishing"
        )
        assert renamed.revision > snapshot.revision


@contextlib.asynccontextmanager
async def oversized_tags() -> AsyncIterator[int]:
    """A backend whose health probe answers 200 and whose /api/tags claims more bytes than the bound
    (and sends an endless body of spaces); yields its port."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while head := await reader.readuntil(b"\r\n\r\n"):
                if b"/api/tags" in head.split(b"\r\n", 1)[0]:
                    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                    chunk = b" " * 65536
                    for _ in range(MAX_INVENTORY_BYTES // len(chunk) + 2):
                        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        await writer.drain()
                    writer.write(b"0\r\n\r\n")
                else:
                    writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n{"models":[]}')
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def test_a_model_listing_over_the_byte_bound_is_refused_as_an_inventory_error(
    probing_admin: httpx.AsyncClient,
) -> None:
    async with oversized_tags() as port:
        resp = await probing_admin.put(
            "/v1.0/backends", json={"Identifier": "huge", "Hostname": "127.0.0.1", "Port": port}
        )
        assert resp.status_code == 201, resp.text
        for _ in range(200):
            health = (await probing_admin.get("/v1.0/backends/huge/health")).json()
            if health["ModelsError"]:
                break
            await asyncio.sleep(0.05)
        assert f"more than {MAX_INVENTORY_BYTES} bytes" in health["ModelsError"]
        assert health["Models"] == []
