"""`ollamaflow migrate`: bring the control-plane database schema up to date."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def migrate(
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="PostgreSQL URL, e.g. postgresql://user:pass@host:5432/ollamaflow. "
            "[env OLLAMAFLOW_DATABASE_URL]",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="TOML config file to read database_url from. [env OLLAMAFLOW_CONFIG]"),
    ] = None,
) -> None:
    """Apply the database migrations (the control plane also does this when it starts).

    Safe to run while control planes are running or starting: migrations take a Postgres advisory lock.
    """
    from sqlalchemy.exc import OperationalError

    from controlplane.migrate import current_revision, upgrade
    from controlplane.settings import load_database_url
    from shared.errors import ConfigError

    try:
        url = load_database_url(config, database_url=database_url)
        upgrade(url)
        typer.echo(f"database schema at revision {current_revision(url)} (head)")
    except ConfigError as exc:
        typer.echo(f"ollamaflow migrate: {exc}", err=True)
        raise typer.Exit(2) from None
    except OperationalError as exc:
        reason = str(exc.orig or exc).strip().splitlines()[0]
        typer.echo(f"ollamaflow migrate: cannot reach the database: {reason}", err=True)
        raise typer.Exit(1) from None
