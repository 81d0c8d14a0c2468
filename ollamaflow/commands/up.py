"""`ollamaflow up`."""

from __future__ import annotations

from pathlib import Path

import typer


def up(
    demo: bool = typer.Option(
        False, "--demo", help="Also start three simulated Ollama backends and a catch-all frontend over them."
    ),
    dataplanes: int = typer.Option(
        1, "--dataplanes", min=1, help="Number of data planes: the first on --port, the next ones after it."
    ),
    workers: int | None = typer.Option(
        None,
        "--workers",
        min=1,
        max=64,
        help="Worker processes per data plane, on its one port (ollamaflow dataplane --workers); "
        "each reports as a data plane of its own, dataplane-<N>-w<K> [env OLLAMAFLOW_DATAPLANE_WORKERS; "
        "default 1].",
    ),
    controlplanes: int = typer.Option(
        1,
        "--controlplanes",
        min=1,
        help="Number of control planes: the first on --controlplane-port, the others on free ports; "
        "one at a time leads (probes, syncs models, publishes), all serve the admin API.",
    ),
    data_dir: Path = typer.Option(
        Path(".ollamaflow"),
        "--data-dir",
        help="Where the database, the JetStream store, the admin token, the NATS passwords, the snapshot "
        "signing keys and snapshot caches are kept.",
    ),
    database_url: str | None = typer.Option(
        None, "--database-url", help="Use this PostgreSQL instead of starting the embedded one."
    ),
    nats_url: str | None = typer.Option(
        None,
        "--nats-url",
        help="Use this NATS (with JetStream) instead of starting the embedded one (its login: "
        "OLLAMAFLOW_NATS_USER/OLLAMAFLOW_NATS_PASSWORD in the environment).",
    ),
    port: int = typer.Option(43411, "--port", min=1, max=65535, help="Port of the first data plane."),
    controlplane_port: int = typer.Option(
        43412, "--controlplane-port", min=1, max=65535, help="Port of the control plane."
    ),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address the planes listen on (0.0.0.0 to be reachable from elsewhere)."
    ),
) -> None:
    """Run a whole cluster on this machine: embedded PostgreSQL and NATS, the control plane and data
    planes, each its own process. A part that dies is restarted on its own port with backoff (a crash
    loop, 5 restarts within 60 s, stops everything); each child's log is in --data-dir/logs. Ctrl-C
    stops everything; state stays in --data-dir.

    Data planes listen on --port, then the following ports, skipping --controlplane-port (43411,
    43413, 43414, ... by default). OLLAMAFLOW_ADMIN_TOKENS in the environment sets the admin tokens;
    otherwise a token is generated once and kept in the file admin-token in --data-dir. Likewise the
    secrets key that seals backend secrets: OLLAMAFLOW_SECRETS_KEY or _FILE, else the file secrets-key.
    Both planes let the web UI on http://localhost:3000 and http://127.0.0.1:3000 call them (CORS);
    OLLAMAFLOW_CORS_ORIGINS and OLLAMAFLOW_DATAPLANE_CORS_ORIGINS replace that (none: no CORS).
    """
    import sys

    from ollamaflow.up import UpOptions, run

    options = UpOptions(
        data_dir=data_dir,
        demo=demo,
        dataplanes=dataplanes,
        workers=workers,
        controlplanes=controlplanes,
        database_url=database_url,
        nats_url=nats_url,
        port=port,
        controlplane_port=controlplane_port,
        host=host,
    )
    raise typer.Exit(run(options, sys.stdout))
