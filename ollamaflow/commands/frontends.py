"""`ollamaflow frontends list|show|add|edit|rm`: what clients reach (by Host), through the admin API."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ollamaflow.commands.admin_io import (
    BodyFile,
    DataDirOption,
    Ident,
    Json,
    Name,
    Sets,
    Token,
    Url,
    build_body,
    id_argument,
)
from ollamaflow.commands.resources import Resource, add_read_commands, write

app = typer.Typer(
    help="Frontends: the Hosts clients call, each with its pool of backends and its rules.",
    no_args_is_help=True,
)

FRONTENDS = Resource(
    noun="frontend",
    collection="/v1.0/frontends",
    headers=("Identifier", "Name", "Hostname", "Strategy", "Backends", "Required models", "Active"),
    row=lambda f: (
        f.get("Identifier"),
        f.get("Name"),
        f.get("Hostname"),
        f.get("LoadBalancing"),
        f.get("Backends"),
        f.get("RequiredModels"),
        f.get("Active"),
    ),
)
add_read_commands(app, FRONTENDS)

ItemId = id_argument("frontend")
_STRATEGIES = {s.lower(): s for s in ("RoundRobin", "Random", "LeastConnections", "ModelAware")}

Hostname = Annotated[
    str | None,
    typer.Option("--hostname", help="The Host it serves, or '*' for any other [API default: *]."),
]
Backends = Annotated[
    list[str] | None,
    typer.Option(
        "--backend", help="A backend of its pool (repeatable; replaces the list).", show_default=False
    ),
]
RequiredModels = Annotated[
    list[str] | None,
    typer.Option(
        "--required-model",
        help="A model every backend of the pool must have (repeatable; replaces the list).",
        show_default=False,
    ),
]
Strategy = Annotated[
    str | None,
    typer.Option(
        "--load-balancing",
        help="RoundRobin, Random, LeastConnections or ModelAware [API default: ModelAware].",
    ),
]
TimeoutMs = Annotated[
    int | None, typer.Option("--timeout-ms", min=0, help="TimeoutMs of a request upstream.")
]
ModelManagement = Annotated[
    bool | None,
    typer.Option(
        "--allow-model-management/--no-allow-model-management",
        help="Let clients pull, delete, copy and create models through it.",
        show_default=False,
    ),
]
PullAdds = Annotated[
    bool | None,
    typer.Option(
        "--pull-adds-required-models/--no-pull-adds-required-models",
        help="Whether a pull also adds the model to RequiredModels.",
        show_default=False,
    ),
]
RequireKeys = Annotated[
    bool | None,
    typer.Option(
        "--require-api-keys/--no-require-api-keys", help="Only clients with an API key.", show_default=False
    ),
]
Active = Annotated[
    bool | None,
    typer.Option("--active/--inactive", help="An inactive frontend answers no requests.", show_default=False),
]


def _fields(
    ident: str | None,
    name: str | None,
    hostname: str | None,
    backends: list[str] | None,
    required: list[str] | None,
    strategy: str | None,
    timeout_ms: int | None,
    management: bool | None,
    pull_adds: bool | None,
    require_keys: bool | None,
    active: bool | None,
) -> dict[str, Any]:
    if strategy is not None and strategy.lower() not in _STRATEGIES:
        raise typer.BadParameter(
            f"must be one of {', '.join(_STRATEGIES.values())}", param_hint="--load-balancing"
        )
    return {
        "Identifier": ident,
        "Name": name,
        "Hostname": hostname,
        "Backends": backends or None,
        "RequiredModels": required or None,
        "LoadBalancing": _STRATEGIES[strategy.lower()] if strategy is not None else None,
        "TimeoutMs": timeout_ms,
        "AllowModelManagement": management,
        "PullAddsRequiredModels": pull_adds,
        "RequireApiKeys": require_keys,
        "Active": active,
    }


@app.command("add")
def add(
    ident: Ident = None,
    name: Name = None,
    hostname: Hostname = None,
    backend: Backends = None,
    required_model: RequiredModels = None,
    load_balancing: Strategy = None,
    timeout_ms: TimeoutMs = None,
    allow_model_management: ModelManagement = None,
    pull_adds_required_models: PullAdds = None,
    require_api_keys: RequireKeys = None,
    active: Active = None,
    set_: Sets = None,
    file: BodyFile = None,
    url: Url = None,
    token: Token = None,
    data_dir: DataDirOption = None,
    json: Json = False,
) -> None:
    """Add a frontend; fields not given take the API's defaults.

    Example: `ollamaflow frontends add --id main --hostname '*' --backend gpu1 --backend gpu2`
    """
    fields = _fields(
        ident, name, hostname, backend, required_model, load_balancing, timeout_ms,
        allow_model_management, pull_adds_required_models, require_api_keys, active,
    )  # fmt: skip
    write(FRONTENDS, None, build_body(file, fields, set_), url=url, token=token, data_dir=data_dir, json=json)


@app.command("edit")
def edit(
    ident: ItemId,
    name: Name = None,
    hostname: Hostname = None,
    backend: Backends = None,
    required_model: RequiredModels = None,
    load_balancing: Strategy = None,
    timeout_ms: TimeoutMs = None,
    allow_model_management: ModelManagement = None,
    pull_adds_required_models: PullAdds = None,
    require_api_keys: RequireKeys = None,
    active: Active = None,
    set_: Sets = None,
    file: BodyFile = None,
    url: Url = None,
    token: Token = None,
    data_dir: DataDirOption = None,
    json: Json = False,
) -> None:
    """Change only the given fields of a frontend (PATCH); the rest stay as they are.

    Example: `ollamaflow frontends edit main --backend gpu1 --required-model llama3.2`

    A repeatable option replaces the whole list; to empty one: `--set 'RequiredModels=[]'`.
    """
    fields = _fields(
        None, name, hostname, backend, required_model, load_balancing, timeout_ms,
        allow_model_management, pull_adds_required_models, require_api_keys, active,
    )  # fmt: skip
    write(
        FRONTENDS, ident, build_body(file, fields, set_), url=url, token=token, data_dir=data_dir, json=json
    )
