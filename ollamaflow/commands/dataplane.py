"""`ollamaflow dataplane`: run one data plane (the proxy clients talk to)."""

from __future__ import annotations

from pathlib import Path

import typer


def dataplane(
    host: str = typer.Option(
        None, "--host", help="Address to listen on [env OLLAMAFLOW_DATAPLANE_HOST; default 0.0.0.0]."
    ),
    port: int = typer.Option(
        None, "--port", help="Port to listen on [env OLLAMAFLOW_DATAPLANE_PORT; default 43411]."
    ),
    config: Path = typer.Option(
        None,
        "--config",
        help="TOML file with settings in lower case without the OLLAMAFLOW_ prefix "
        '(e.g. nats_url = "nats://...") [env OLLAMAFLOW_CONFIG]. The environment wins over the file.',
        exists=True,
        dir_okay=False,
    ),
    dataplane_id: str = typer.Option(
        None,
        "--id",
        help="This data plane's id in reports [env OLLAMAFLOW_DATAPLANE_ID; default hostname-port-random].",
    ),
    workers: int = typer.Option(
        None,
        "--workers",
        min=1,
        max=64,
        help="Worker processes serving this port, each a data plane of its own with the id <id>-w<K> "
        "(K from 0) [env OLLAMAFLOW_DATAPLANE_WORKERS; default 1: this process serves].",
    ),
    listen_fd: int = typer.Option(None, "--listen-fd", hidden=True, help="A worker's inherited socket."),
) -> None:
    """Serve the Ollama and OpenAI APIs here and proxy them to the backends of the current snapshot.

    Follows the snapshot the control plane publishes on NATS (OLLAMAFLOW_NATS_URL,
    OLLAMAFLOW_BUS_NAMESPACE), keeps serving its last good snapshot while NATS is away, and can start
    from a copy on disk (OLLAMAFLOW_SNAPSHOT_CACHE). Stops cleanly on SIGTERM/SIGINT. What one client
    may make it hold is bounded by the OLLAMAFLOW_CLIENT_* settings and OLLAMAFLOW_MAX_JSON_BODY.
    Backend secrets arrive sealed: OLLAMAFLOW_SECRETS_KEY (or _FILE) must be the control plane's key.
    Browser pages on other origins may call it only from the origins in
    OLLAMAFLOW_DATAPLANE_CORS_ORIGINS (comma-separated, e.g. http://localhost:3000; default none).

    With --workers N, a parent process binds the port and N workers serve it; each follows the
    snapshot and reports on its own, so the control plane splits backend limits among them as among
    any data planes (limits are shared per process). A worker that dies is started again with backoff;
    SIGTERM drains every worker. With OLLAMAFLOW_DATAPLANE_METRICS_PORT P, worker K serves its metrics
    on P+K.
    """
    from shared.errors import ConfigError

    try:
        if listen_fd is None:
            from dataplane.settings import load_settings

            settings = load_settings(
                config_file=config,
                dataplane_host=host,
                dataplane_port=port,
                dataplane_id=dataplane_id,
                dataplane_workers=workers,
            )
            if settings.dataplane_workers > 1:
                from ollamaflow.worker_parent import run_workers
                from shared.logformat import configure_logging

                configure_logging(settings.log_level, settings.log_format, settings.log_syslog)
                raise SystemExit(run_workers(settings, settings.dataplane_workers, config))
        from dataplane.server import serve

        serve(host=host, port=port, config_file=config, dataplane_id=dataplane_id, listen_fd=listen_fd)
    except ConfigError as exc:
        raise SystemExit(f"ollamaflow dataplane: {exc.message}") from exc
