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
) -> None:
    """Serve the Ollama and OpenAI APIs here and proxy them to the backends of the current snapshot.

    Follows the snapshot the control plane publishes on NATS (OLLAMAFLOW_NATS_URL,
    OLLAMAFLOW_BUS_NAMESPACE), keeps serving its last good snapshot while NATS is away, and can start
    from a copy on disk (OLLAMAFLOW_SNAPSHOT_CACHE). Stops cleanly on SIGTERM/SIGINT. What one client
    may make it hold is bounded by the OLLAMAFLOW_CLIENT_* settings and OLLAMAFLOW_MAX_JSON_BODY.
    Backend secrets arrive sealed: OLLAMAFLOW_SECRETS_KEY (or _FILE) must be the control plane's key.
    Browser pages on other origins may call it only from the origins in
    OLLAMAFLOW_DATAPLANE_CORS_ORIGINS (comma-separated, e.g. http://localhost:3000; default none).
    """
    from dataplane.server import serve
    from shared.errors import ConfigError

    try:
        serve(host=host, port=port, config_file=config, dataplane_id=dataplane_id)
    except ConfigError as exc:
        raise SystemExit(f"ollamaflow dataplane: {exc.message}") from exc
