"""`ollamaflow backends list|show|add|edit|rm`: the inference servers, through the admin API."""

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
    help="Backends: the Ollama or OpenAI-compatible servers frontends send requests to.",
    no_args_is_help=True,
)

BACKENDS = Resource(
    noun="backend",
    collection="/v1.0/backends",
    headers=("Identifier", "Name", "URL", "Format", "Parallel", "Rate/s", "Labels", "Active"),
    row=lambda b: (
        b.get("Identifier"),
        b.get("Name"),
        b.get("UrlPrefix"),
        b.get("ApiFormat"),
        b.get("MaxParallelRequests"),
        b.get("RateLimitRequestsThreshold"),
        b.get("Labels"),
        b.get("Active"),
    ),
)
add_read_commands(app, BACKENDS)

ItemId = id_argument("backend")
_FORMATS = {"ollama": "Ollama", "openai": "OpenAI"}

Hostname = Annotated[
    str | None, typer.Option("--hostname", help="Host name or IP address [API default: localhost].")
]
Port = Annotated[int | None, typer.Option("--port", min=1, max=65535, help="[API default: 8000]")]
Ssl = Annotated[bool | None, typer.Option("--ssl/--no-ssl", help="Talk https.", show_default=False)]
Format = Annotated[
    str | None, typer.Option("--format", help="API of the server: ollama or openai [API default: ollama].")
]
MaxParallel = Annotated[
    int | None,
    typer.Option(
        "--max-parallel",
        min=0,
        help="MaxParallelRequests: in flight at once, whole cluster; 0: unlimited [API default: 0].",
    ),
]
RateLimit = Annotated[
    int | None,
    typer.Option(
        "--rate-limit",
        min=0,
        help="RateLimitRequestsThreshold: requests started per second, whole cluster; 0: unlimited "
        "[API default: 0].",
    ),
]
Labels = Annotated[
    list[str] | None,
    typer.Option("--label", help="A label (repeatable; replaces the list).", show_default=False),
]
HealthUrl = Annotated[str | None, typer.Option("--health-url", help="HealthCheckUrl, e.g. /api/tags.")]
Active = Annotated[
    bool | None,
    typer.Option("--active/--inactive", help="An inactive backend gets no requests.", show_default=False),
]


def _fields(
    ident: str | None,
    name: str | None,
    hostname: str | None,
    port: int | None,
    ssl: bool | None,
    format: str | None,
    max_parallel: int | None,
    rate_limit: int | None,
    labels: list[str] | None,
    health_url: str | None,
    active: bool | None,
) -> dict[str, Any]:
    if format is not None and format.lower() not in _FORMATS:
        raise typer.BadParameter("must be 'ollama' or 'openai'", param_hint="--format")
    return {
        "Identifier": ident,
        "Name": name,
        "Hostname": hostname,
        "Port": port,
        "Ssl": ssl,
        "ApiFormat": _FORMATS[format.lower()] if format is not None else None,
        "MaxParallelRequests": max_parallel,
        "RateLimitRequestsThreshold": rate_limit,
        "Labels": labels or None,
        "HealthCheckUrl": health_url,
        "Active": active,
    }


@app.command("add")
def add(
    ident: Ident = None,
    name: Name = None,
    hostname: Hostname = None,
    port: Port = None,
    ssl: Ssl = None,
    format: Format = None,
    max_parallel: MaxParallel = None,
    rate_limit: RateLimit = None,
    label: Labels = None,
    health_url: HealthUrl = None,
    active: Active = None,
    set_: Sets = None,
    file: BodyFile = None,
    url: Url = None,
    token: Token = None,
    data_dir: DataDirOption = None,
    json: Json = False,
) -> None:
    """Add a backend; fields not given take the API's defaults.

    Example: `ollamaflow backends add --id gpu1 --hostname 10.0.0.5 --port 11434 --max-parallel 8`
    """
    fields = _fields(
        ident, name, hostname, port, ssl, format, max_parallel, rate_limit, label, health_url, active
    )
    body = build_body(file, fields, set_)
    write(BACKENDS, None, body, url=url, token=token, data_dir=data_dir, json=json)


@app.command("edit")
def edit(
    ident: ItemId,
    name: Name = None,
    hostname: Hostname = None,
    port: Port = None,
    ssl: Ssl = None,
    format: Format = None,
    max_parallel: MaxParallel = None,
    rate_limit: RateLimit = None,
    label: Labels = None,
    health_url: HealthUrl = None,
    active: Active = None,
    set_: Sets = None,
    file: BodyFile = None,
    url: Url = None,
    token: Token = None,
    data_dir: DataDirOption = None,
    json: Json = False,
) -> None:
    """Change only the given fields of a backend (PATCH); the rest stay as they are.

    Example: `ollamaflow backends edit gpu1 --max-parallel 16 --inactive`
    """
    fields = _fields(
        None, name, hostname, port, ssl, format, max_parallel, rate_limit, label, health_url, active
    )
    body = build_body(file, fields, set_)
    write(BACKENDS, ident, body, url=url, token=token, data_dir=data_dir, json=json)
