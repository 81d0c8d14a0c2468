"""Run the data plane under uvicorn (uvloop, httptools bounded by our client limits, no access log) until
SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
from collections.abc import Iterator
from pathlib import Path

import uvicorn
import uvloop

from dataplane.app import create_app
from dataplane.client_limits import ClientLimits, ClientProtocol, raise_open_files_limit
from dataplane.settings import DataPlaneSettings, load_settings
from shared.logs import install_redaction

__all__ = ["DataPlaneServer", "configure_logging", "serve", "uvicorn_config"]


class DataPlaneServer(uvicorn.Server):
    """uvicorn without its own signal handlers: whoever runs it decides when it stops.

    uvicorn's handlers re-raise the signal after a graceful stop, so the process would end killed by
    SIGTERM instead of exiting 0; ``serve`` installs its own on the loop instead.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


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
        "timeout_graceful_shutdown": settings.shutdown_grace,
        "timeout_keep_alive": settings.client_keep_alive_timeout,  # enforced by ClientProtocol
        "backlog": 4096,
    }
    options |= overrides
    return uvicorn.Config(app, **options)  # type: ignore[arg-type]


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx (model authoring) logs every request at INFO; our own loggers say what matters.
    logging.getLogger("httpx").setLevel(logging.NOTSET if level.upper() == "DEBUG" else logging.WARNING)
    install_redaction()  # no credential in any line, at any level


def _stop(server: DataPlaneServer) -> None:
    if server.should_exit:  # a second signal: stop waiting for running requests
        server.force_exit = True
    server.should_exit = True


def serve(
    host: str | None = None,
    port: int | None = None,
    config_file: Path | None = None,
    dataplane_id: str | None = None,
) -> None:
    """Load the settings and serve until told to stop.

    On SIGTERM/SIGINT uvicorn stops accepting, lets running requests finish (up to the grace period),
    then runs the app's shutdown, which closes the upstream session and the NATS connection.
    """
    settings = load_settings(
        config_file=config_file, dataplane_host=host, dataplane_port=port, dataplane_id=dataplane_id
    )
    configure_logging(settings.log_level)
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

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, _stop, server)
        await server.serve()

    uvloop.run(main())
