"""`ollamaflow controlplane`: the admin API, migrations and snapshot publishing."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def controlplane(
    host: Annotated[
        str | None,
        typer.Option(help="Address to listen on. [env OLLAMAFLOW_CONTROLPLANE_HOST; default 127.0.0.1]"),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            min=0, max=65535, help="Port to listen on. [env OLLAMAFLOW_CONTROLPLANE_PORT; default 43412]"
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="TOML file with the same keys as the environment, lower case without the OLLAMAFLOW_ prefix "
            "(e.g. database_url, admin_tokens). [env OLLAMAFLOW_CONFIG]",
        ),
    ] = None,
) -> None:
    """Run the control plane: admin API on /v1.0, migrations at start-up, snapshot publishing to NATS.

    Needs OLLAMAFLOW_DATABASE_URL and OLLAMAFLOW_ADMIN_TOKENS (comma-separated bearer tokens), and
    OLLAMAFLOW_SECRETS_KEY (or _FILE) for backends with a BearerToken, Headers or Querystring: it seals
    them in the snapshot, and the data planes need the same key. Run as many as you like on one
    database and bus: all serve the admin API, and the one holding the lease on the bus probes, syncs
    models and publishes (OLLAMAFLOW_CONTROLPLANE_ID names each replica). Browser pages on other
    origins (a web UI) may call the admin API only from the origins in OLLAMAFLOW_CORS_ORIGINS
    (comma-separated, e.g. http://localhost:3000; default none). GET / names the service.
    """
    from controlplane.server import serve
    from shared.errors import ConfigError

    try:
        serve(host, port, config)
    except ConfigError as exc:
        typer.echo(f"ollamaflow controlplane: {exc}", err=True)
        raise typer.Exit(2) from None
