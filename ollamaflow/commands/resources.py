"""The commands backends and frontends share: list, show and rm made for either, and the write that
their add and edit end with (PUT to create, PATCH to change only the fields given)."""

# No ``from __future__ import annotations``: typer reads the commands' annotations, and those made
# here name a local (the id argument), which only evaluated annotations can.
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from ollamaflow.commands.admin_io import (
    DataDirOption,
    Json,
    Token,
    Url,
    emit_json,
    fail,
    id_argument,
    item_path,
    print_item,
    print_table,
    say,
    session,
    warn_ignored,
)

__all__ = ["Resource", "add_read_commands", "write"]


@dataclass(frozen=True)
class Resource:
    noun: str  # "backend"
    collection: str  # "/v1.0/backends"
    headers: Sequence[str]  # the list's columns
    row: Callable[[dict[str, Any]], Sequence[Any]]  # one item's cells


def add_read_commands(app: typer.Typer, resource: Resource) -> None:
    """``list``, ``show ID`` and ``rm ID`` for ``resource`` on ``app``."""
    noun = resource.noun
    IdArgument = id_argument(noun)

    def list_items(
        url: Url = None, token: Token = None, data_dir: DataDirOption = None, json: Json = False
    ) -> None:
        with session(url, token, data_dir) as client:
            items = client.get(resource.collection)
            if json:
                emit_json(items)
            elif not items:
                say(f"no {noun}s")
            else:
                print_table(resource.headers, [resource.row(item) for item in items])

    def show(
        ident: IdArgument,
        url: Url = None,
        token: Token = None,
        data_dir: DataDirOption = None,
        json: Json = False,
    ) -> None:
        with session(url, token, data_dir) as client:
            item = client.get(item_path(resource.collection, ident))
            emit_json(item) if json else print_item(item)

    def rm(ident: IdArgument, url: Url = None, token: Token = None, data_dir: DataDirOption = None) -> None:
        from ollamaflow.admin_client import AdminError

        with session(url, token, data_dir) as client:
            try:
                client.delete(item_path(resource.collection, ident))
            except AdminError as exc:
                if exc.status == 409:  # InUse: say why, as the API does, without the request line
                    fail(f"cannot remove {noun} '{ident}': {exc.description or exc}")
                raise
        say(f"removed {noun} '{ident}'")

    list_items.__doc__ = f"List the {noun}s, newest first."
    show.__doc__ = f"Show one {noun}: every field."
    rm.__doc__ = f"Remove a {noun}." + (
        " Refused while a frontend lists it (take it out of the frontend first)." if noun == "backend" else ""
    )
    app.command("list")(list_items)
    app.command("show")(show)
    app.command("rm")(rm)


def write(
    resource: Resource,
    ident: str | None,
    body: dict[str, Any],
    *,
    url: str | None,
    token: str | None,
    data_dir: Path | None,
    json: bool,
) -> None:
    """Create (``ident`` None: PUT to the collection) or change (PATCH the item), then show the result."""
    noun = resource.noun
    if ident is None:
        if not isinstance(body.get("Identifier"), str) or not body["Identifier"]:
            fail(f"a new {noun} needs an Identifier: give --id (or Identifier in -f or --set)", 2)
    elif not body:
        fail("nothing to change: give the fields to change as options, --set Key=JSON or -f", 2)
    with session(url, token, data_dir) as client:
        if ident is None:
            answer = client.put(resource.collection, body)
        else:
            answer = client.patch(item_path(resource.collection, ident), body)
        warn_ignored(body, answer)
        if json:
            emit_json(answer)
        else:
            done = "added" if ident is None else "changed"
            say(f"{done} {noun} '{answer.get('Identifier', ident)}'")
            print_item(answer)
