"""Serving the simulator: in-process for tests (``running_sim``) and as a process (``serve``).

Both use granian's embedded server on the running event loop. Measured against uvicorn (uvloop +
httptools) serving the same app (wrk, 32 connections, 2 cores shared with wrk and other work, best
of three runs each, req/s granian vs uvicorn): GET /api/version 26.7k vs 16.4k, /api/chat whole
10.6k vs 9.2k, streamed 5.2k vs 3.8k, /v1/chat/completions whole 9.6k vs 12.3k, streamed 5.6k vs
4.4k. Streams are most of what a simulated LLM serves, so granian it is (its I/O thread costs
some extra CPU per non-streamed request).

granian binds its listener with SO_REUSEPORT, so a second server on a taken port would silently
share it instead of failing. A reservation socket guards against that: it claims the port (with
SO_REUSEPORT, so granian can join, but never listening, so it takes no connections) until
granian has bound, and a plain probe first checks that nobody else listens there.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
from collections.abc import AsyncIterator

from granian.constants import HTTPModes, Interfaces
from granian.server.embed import Server

from ollamaflow.sim.app import create_app
from ollamaflow.sim.config import SimConfig

__all__ = ["base_url", "running_sim", "serve"]


def _reserve(host: str, port: int) -> socket.socket:
    """Claim ``host:port`` (0 = a free port) for a granian listener; raises OSError when taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if port:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))  # fails if any socket, granian's included, holds the port
    reservation = socket.socket(family, socket.SOCK_STREAM)
    try:
        reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        reservation.bind((host, port))
    except OSError:
        reservation.close()
        raise
    return reservation


def base_url(host: str, port: int, *, tls: bool = False) -> str:
    scheme = "https" if tls else "http"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def _granian(config: SimConfig, port: int) -> Server:
    return Server(
        create_app(config),
        address=config.host,
        port=port,
        interface=Interfaces.ASGINL,
        http=HTTPModes.http1,
        websockets=False,
        backlog=2048,
        log_enabled=config.log_level.lower() in ("debug", "info"),
        ssl_cert=config.tls_cert,
        ssl_key=config.tls_key,
    )


async def _started(server: Server, task: asyncio.Task[None], url: str) -> None:
    """Wait until the listener accepts connections (granian has no start-up event)."""
    host, port = url.rsplit("/", 1)[-1].rsplit(":", 1)
    for _ in range(2000):
        if task.done():
            task.result()
            raise RuntimeError("simulator stopped during start-up")
        try:
            _reader, writer = await asyncio.open_connection(host.strip("[]"), int(port))
        except OSError:
            await asyncio.sleep(0.005)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return
    raise TimeoutError(f"simulator at {url} did not start")


@contextlib.asynccontextmanager
async def running_sim(config: SimConfig | None = None, **changes: object) -> AsyncIterator[str]:
    """Serve a simulator on the running event loop; yields its base URL (``http://127.0.0.1:PORT``,
    ``https://`` with ``tls_cert``).

    ``changes`` override fields of ``config`` (e.g. ``running_sim(format="openai")``); port 0
    (the default) takes a free port.
    """
    config = (config or SimConfig()).replace(**changes)
    reservation = _reserve(config.host, config.port)
    port = reservation.getsockname()[1]
    url = base_url(config.host, port, tls=config.tls_cert is not None)
    server = _granian(config, port)
    task = asyncio.create_task(server.serve())
    try:
        await _started(server, task, url)
        reservation.close()
        yield url
    finally:
        reservation.close()
        server.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=10)


def serve(config: SimConfig) -> None:
    """Serve until SIGTERM or SIGINT, then stop cleanly (exit status 0)."""

    async def main() -> None:
        reservation = _reserve(config.host, config.port)
        port = reservation.getsockname()[1]
        url = base_url(config.host, port, tls=config.tls_cert is not None)
        server = _granian(config, port)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, server.stop)
        task = asyncio.create_task(server.serve())
        try:
            await _started(server, task, url)
        finally:
            reservation.close()
        models = ", ".join(config.models) or "none"
        api = f"{config.format} ({config.dialect})" if config.dialect else config.format
        print(f"ollamaflow sim: {api} API on {url} (models: {models})", file=sys.stderr, flush=True)
        await task

    if sys.platform != "win32":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())
