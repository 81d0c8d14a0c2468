"""The ``ollamaflow`` command: one sub-command per job, each defined in ``ollamaflow.commands``.

Command modules import only typer at module level; each imports its plane when it runs, so that a
data-plane-only install (no Postgres driver) can still run ``ollamaflow dataplane``.
"""

from __future__ import annotations

import typer

from ollamaflow.commands import (
    backends,
    bench,
    bus,
    config,
    controlplane,
    dataplane,
    frontends,
    migrate,
    models,
    pull,
    sim,
    status,
    up,
)

__all__ = ["app", "main"]

app = typer.Typer(
    name="ollamaflow",
    help="Load balancer and orchestration layer for Ollama and OpenAI-compatible inference servers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
app.command("up")(up.up)
app.command("controlplane")(controlplane.controlplane)
app.command("dataplane")(dataplane.dataplane)
app.command("migrate")(migrate.migrate)
app.command("sim")(sim.sim)
app.command("bench")(bench.bench)
app.command("keys")(bus.keys)
app.command("nats-config")(bus.nats_config)
app.command("apply")(config.apply)
app.command("export")(config.export)
app.command("import")(config.import_)
# Admin commands: clients of the admin API (ollamaflow.admin_client).
app.add_typer(backends.app, name="backends")
app.add_typer(frontends.app, name="frontends")
app.command("models")(models.models)
app.command("pull")(pull.pull)
app.command("status")(status.status)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
