"""Helpers of the monitoring and model-sync tests (their fixtures are in conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx

from shared.snapshot import BackendView, Snapshot

__all__ = ["backend", "port_of", "post_json", "sim_stats", "slow_health_endpoint"]


def backend(snapshot: Snapshot, ident: str) -> BackendView | None:
    return next((b for b in snapshot.content.backends if b.id == ident), None)


async def sim_stats(sim: str) -> dict:
    async with httpx.AsyncClient() as client:
        return (await client.get(sim + "/_sim/stats")).json()


async def post_json(url: str, json: object) -> None:
    async with httpx.AsyncClient() as client:
        (await client.post(url, json=json)).raise_for_status()


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@contextlib.asynccontextmanager
async def slow_health_endpoint(delay: float) -> AsyncIterator[int]:
    """A server whose every answer is a 200 after ``delay`` seconds; yields its port."""
    closing = asyncio.Event()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while not closing.is_set() and await reader.readuntil(b"\r\n\r\n"):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(closing.wait(), delay)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    async with server:
        try:
            yield server.sockets[0].getsockname()[1]
        finally:
            closing.set()
            await asyncio.sleep(0.05)  # let the handlers finish instead of being cancelled
