"""Run the control plane under uvicorn (uvloop + httptools); SIGTERM and SIGINT shut it down cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import uvicorn

from controlplane.app import create_app
from controlplane.settings import load_settings
from shared import logformat
from shared.logs import install_redaction

__all__ = ["configure_logging", "serve"]

log = logging.getLogger("ollamaflow.controlplane")


class _Server(uvicorn.Server):
    """uvicorn, but exiting 0 after a graceful stop on SIGTERM/SIGINT.

    uvicorn's own handlers re-raise the signal once it has shut down, so the process would end as
    "killed by SIGTERM"; these handlers only ask it to stop (a second signal stops waiting). The
    first signal also makes the replica give up the control-plane lease at once, while uvicorn still
    waits for open connections to end.
    """

    def __init__(self, config: uvicorn.Config, *, on_stop: Callable[[], Awaitable[None]]) -> None:
        super().__init__(config)
        self._on_stop = on_stop
        self._stopping: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        signals = (signal.SIGINT, signal.SIGTERM)
        try:
            for sig in signals:
                loop.add_signal_handler(sig, self._stop)
        except NotImplementedError:  # no loop signal handlers on this platform: uvicorn's way
            with super().capture_signals():
                yield
            return
        try:
            yield
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)

    def _stop(self) -> None:
        if self.should_exit:
            self.force_exit = True
        self.should_exit = True
        if self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_task(self._on_stop())


def configure_logging(level: str, log_format: str = "text", syslog: str = "") -> None:
    # Text or JSON on stderr, optionally syslog; every handler redacts credentials (probes call URLs
    # with backends' query strings: no credential in any line).
    logformat.configure_logging(level, log_format, syslog)
    # Alembic announces every plugin it loads; keep its migration messages only.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    # httpx logs every request at INFO: with probes every few seconds per backend that buries what
    # matters (health changes, pulls, publishes), which our own loggers say. Shown at DEBUG.
    logging.getLogger("httpx").setLevel(logging.NOTSET if level.upper() == "DEBUG" else logging.WARNING)


def _loop() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:  # e.g. Windows
        return "asyncio"
    return "uvloop"


def serve(host: str | None = None, port: int | None = None, config_file: str | Path | None = None) -> None:
    """Serve until SIGTERM/SIGINT. Raises ConfigError before binding anything if the settings are bad."""
    settings = load_settings(config_file, overrides={"host": host, "port": port})
    configure_logging(settings.log_level, settings.log_format, settings.log_syslog)
    log.info(
        "control plane starting on http://%s:%d (bus namespace %r)",
        settings.host,
        settings.port,
        settings.bus_namespace,
    )
    app = create_app(settings)
    install_redaction(known=app.state.plane.known_secrets)  # and the backends' own secret values
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop=_loop(),
        http="httptools",
        lifespan="on",
        log_config=None,  # keep the logging configured above
        log_level=settings.log_level.lower(),
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    _Server(config, on_stop=app.state.plane.resign).run()
