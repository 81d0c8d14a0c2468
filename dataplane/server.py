"""Run the data plane under uvicorn (uvloop, httptools bounded by our client limits, without uvicorn's
access log: ``dataplane.observe.request_log`` writes ours) until SIGTERM or SIGINT, then drain
(``dataplane.drain``)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import uvicorn
import uvloop

from dataplane.app import DataPlane, create_app
from dataplane.http.client_limits import ClientLimits, ClientProtocol, raise_open_files_limit
from dataplane.settings import DataPlaneSettings, load_settings
from shared import logformat
from shared.logs import install_redaction

__all__ = [
    "END_GRACE",
    "WORKER_SNAPSHOT_WAIT",
    "DataPlaneServer",
    "configure_logging",
    "serve",
    "uvicorn_config",
]

log = logging.getLogger("ollamaflow.dataplane")

# After the drain timeout: how long the requests it ended get to write their last words.
END_GRACE = 2.0
# How long a worker (``listen_fd``) waits for its first snapshot before it serves (DataPlane.startup).
WORKER_SNAPSHOT_WAIT = 10.0


class DataPlaneServer(uvicorn.Server):
    """uvicorn with the data plane's graceful stop (``dataplane.drain``) and without uvicorn's own
    signal handlers: whoever runs it decides when it stops (``stop``).

    uvicorn's handlers re-raise the signal after a graceful stop, so the process would end killed by
    SIGTERM instead of exiting 0; ``serve`` installs its own on the loop instead.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        app = config.app
        assert isinstance(app, DataPlane), "built by uvicorn_config"
        self.drain = app.drain
        self.drain_timeout = app.settings.drain_timeout
        self.loop: asyncio.AbstractEventLoop | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def stop(self) -> None:
        """SIGTERM/SIGINT (on the server's loop): the first drains, a second one ends at once."""
        if self.should_exit:  # a second signal: stop waiting for running requests
            self.force_exit = True
        self.should_exit = True
        self.drain.begin()  # /readyz and the report say so now, not at uvicorn's next tick

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().startup(sockets)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Drain: stop accepting, end each connection after what is under way, give running requests
        up to ``drain_timeout``, end the rest in their clients' formats, then the app's shutdown."""
        drain = self.drain
        drain.begin()
        log.info(
            "draining: no new connections; %d request(s) running get up to %g s (OLLAMAFLOW_DRAIN_TIMEOUT)",
            drain.running,
            self.drain_timeout,
        )
        # Accept what the kernel has already queued (each loop pass accepts all of it), so that those
        # clients are served rather than reset when the listening socket closes.
        for _ in range(2):
            await asyncio.sleep(0)
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        loop = asyncio.get_running_loop()
        settled = await self._settled(loop.time() + self.drain_timeout)
        if not settled and not self.force_exit:
            ended = drain.end()
            log.warning("drain timeout: ending %d request(s) still running", ended)
            settled = await self._settled(loop.time() + END_GRACE)
        if self.force_exit:  # a second signal: as before the drain, nothing more is waited for
            return
        if not settled:  # e.g. a client that takes nothing, so the last words cannot go out
            tasks = [task for task in self.server_state.tasks if not task.done()]
            log.warning("cancelling %d request(s) that did not end within %g s", len(tasks), END_GRACE)
            for task in tasks:
                task.cancel(msg="the data plane stops")
            await asyncio.sleep(0.1)
            for connection in list(self.server_state.connections):
                if connection.transport is not None:
                    connection.transport.close()
        await self.lifespan.shutdown()

    async def _settled(self, deadline: float) -> bool:
        """Wait until no connection and no request is left (True), or the deadline or a second signal."""
        state, loop = self.server_state, asyncio.get_running_loop()
        while state.connections or any(not task.done() for task in state.tasks):
            if self.force_exit or loop.time() >= deadline:
                return False
            await asyncio.sleep(min(0.05, max(deadline - loop.time(), 0.0)))
        return True


def client_limits(settings: DataPlaneSettings) -> ClientLimits:
    return ClientLimits(
        max_header_bytes=settings.client_max_header_bytes,
        max_headers=settings.client_max_headers,
        header_timeout=settings.client_header_timeout,
        keep_alive_timeout=settings.client_keep_alive_timeout,
        send_timeout=settings.client_send_timeout,
        max_connections=settings.client_max_connections,
    )


def uvicorn_config(settings: DataPlaneSettings, **overrides: object) -> uvicorn.Config:
    """The uvicorn configuration the data plane runs with (tests use it too, with their own socket)."""
    app = create_app(settings)
    # uvicorn builds one protocol per connection with its own keyword arguments; ours come first.
    protocol = functools.partial(
        ClientProtocol, limits=client_limits(settings), errors=app.traffic.client_errors
    )
    options: dict[str, object] = {
        "host": settings.dataplane_host,
        "port": settings.dataplane_port,
        "loop": "uvloop",
        "http": protocol,
        "ws": "none",  # an upgrade request is refused by the protocol, never handed on
        "lifespan": "on",
        "access_log": False,
        "server_header": False,
        "proxy_headers": False,  # the peer address is the client: X-Forwarded-For is ours to append to
        "log_config": None,  # keep the process's logging setup
        "timeout_keep_alive": settings.client_keep_alive_timeout,  # enforced by ClientProtocol
        "backlog": 4096,
    }
    options |= overrides
    return uvicorn.Config(app, **options)  # type: ignore[arg-type]


def configure_logging(level: str, log_format: str = "text", syslog: str = "") -> None:
    # Text or JSON on stderr, optionally syslog; every handler redacts credentials (shared.logformat).
    logformat.configure_logging(level, log_format, syslog)
    # httpx (model authoring) logs every request at INFO; our own loggers say what matters.
    logging.getLogger("httpx").setLevel(logging.NOTSET if level.upper() == "DEBUG" else logging.WARNING)


def serve(
    host: str | None = None,
    port: int | None = None,
    config_file: Path | None = None,
    dataplane_id: str | None = None,
    listen_fd: int | None = None,
) -> None:
    """Load the settings and serve until told to stop; on the listening socket ``listen_fd`` when given
    (a worker of ``ollamaflow dataplane --workers``: its parent bound the port), else on host:port.

    On SIGTERM/SIGINT the data plane drains (``DataPlaneServer.shutdown``): it stops accepting, lets
    running requests finish (up to ``OLLAMAFLOW_DRAIN_TIMEOUT``) and ends the rest in their clients'
    formats, then runs the app's shutdown, which closes the upstream session and the NATS connection.
    A second signal ends at once.
    """
    settings = load_settings(
        config_file=config_file, dataplane_host=host, dataplane_port=port, dataplane_id=dataplane_id
    )
    configure_logging(settings.log_level, settings.log_format, settings.log_syslog)
    logging.getLogger("ollamaflow.dataplane").info(
        "data plane %s on %s:%d (NATS %s, namespace %s)",
        settings.dataplane_id,
        settings.dataplane_host,
        settings.dataplane_port,
        settings.nats_url,
        settings.bus_namespace,
    )
    # Every client connection is a descriptor, and so is every upstream one.
    raise_open_files_limit(settings.client_max_connections + settings.upstream_max_connections + 256)
    server = DataPlaneServer(uvicorn_config(settings))
    app = server.config.app
    assert isinstance(app, DataPlane)
    install_redaction(known=app.state.known_secrets)  # and the secret values of the applied snapshot
    if listen_fd is not None:
        app.snapshot_wait = WORKER_SNAPSHOT_WAIT

    # The parent's socket, shared with the other workers: each accepts from the one queue.
    sockets = None if listen_fd is None else [socket.socket(fileno=listen_fd)]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, server.stop)
        await server.serve(sockets)

    uvloop.run(main())
