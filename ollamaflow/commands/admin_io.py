"""What the admin commands share: the connection and output options, the client session that turns
every failure into one line on stderr, request bodies from options, ``--set`` and ``-f``, and the
tables and JSON they print."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from ollamaflow.admin_client import AdminClient

Url = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="The control plane's admin URL. [env OLLAMAFLOW_URL; else the controlplane-url file "
        "`ollamaflow up` writes in --data-dir; else http://127.0.0.1:43412]",
        show_default=False,
    ),
]
Token = Annotated[
    str | None,
    typer.Option(
        "--token",
        help="An admin token. [env OLLAMAFLOW_ADMIN_TOKEN; else the admin-token file in --data-dir]",
        show_default=False,
    ),
]
DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", help="The data directory of `ollamaflow up` [default: .ollamaflow]."),
]
Json = Annotated[bool, typer.Option("--json", help="Print the API's JSON instead of a table.")]
Sets = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Set any API field: Key=JSON, e.g. --set MaxParallelRequests=8 --set 'Name=\"gpu 1\"'. "
        "Repeatable; wins over the other options and -f.",
        show_default=False,
    ),
]
BodyFile = Annotated[
    Path | None,
    typer.Option(
        "-f", "--file", help="A JSON file holding the body (PascalCase API fields).", show_default=False
    ),
]


def id_argument(noun: str) -> Any:
    """The ID argument of the commands on one ``noun``."""
    return Annotated[str, typer.Argument(help=f"The {noun}'s Identifier.", metavar="ID", show_default=False)]


# A body file is a configuration object, not a data set.
MAX_BODY_FILE = 4 * 1024 * 1024
# Fields the API takes but never shows, so their absence from an answer is no sign of a typo.
WRITE_ONLY = frozenset({"BearerToken"})


def plain(text: str, limit: int = 2000) -> str:
    """``text`` as one line of visible characters: what a server says may hold line breaks or
    terminal escapes, and is printed as it is only when it is harmless."""
    flat = " ".join(text.splitlines())
    shown = "".join(c if c.isprintable() else "?" for c in flat[:limit])
    return shown + ("..." if len(flat) > limit else "")


def say(text: str) -> None:
    """One line on stdout (see ``plain``)."""
    typer.echo(plain(text))


def fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr, then exit (1: the API or the network failed; 2: the command was misused)."""
    typer.echo(f"ollamaflow: {plain(message)}", err=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def session(url: str | None, token: str | None, data_dir: Path | None) -> Iterator[AdminClient]:
    """An admin client for the resolved target. An ``AdminError`` inside, or an answer of the wrong
    shape, ends the command with one line: print what the answers hold inside the block too."""
    from ollamaflow.admin_client import AdminClient, AdminError, resolve_target

    target = resolve_target(url, token, data_dir)
    try:
        with AdminClient(target) as client:
            yield client
    except AdminError as exc:
        fail(str(exc))
    except (KeyError, TypeError, AttributeError) as exc:  # e.g. --url names some other JSON service
        fail(f"{target.url} does not answer like the admin API ({type(exc).__name__}: {exc})")


def item_path(collection: str, ident: str) -> str:
    from urllib.parse import quote

    return f"{collection}/{quote(ident, safe='')}"


def build_body(file: Path | None, fields: dict[str, Any], sets: Sequence[str] | None) -> dict[str, Any]:
    """The body from ``-f``, then the options that were given (not None), then each ``--set``."""
    body: dict[str, Any] = {}
    if file is not None:
        try:
            with file.open("rb") as handle:
                raw = handle.read(MAX_BODY_FILE + 1)
        except OSError as exc:
            fail(f"-f {file}: {exc.strerror or exc}", 2)
        if len(raw) > MAX_BODY_FILE:
            fail(f"-f {file}: larger than {MAX_BODY_FILE // (1024 * 1024)} MiB", 2)
        try:
            loaded = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            fail(f"-f {file}: not JSON: {exc}", 2)
        if not isinstance(loaded, dict):
            fail(f"-f {file}: must hold a JSON object", 2)
        body.update(loaded)
    body.update({key: value for key, value in fields.items() if value is not None})
    for item in sets or ():
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            fail(f"--set {item!r}: expected Key=JSON, e.g. MaxParallelRequests=8", 2)
        try:
            body[key] = json.loads(text)
        except ValueError:
            fail(f"--set {key}: {text!r} is not JSON (quote a string: {key}='\"{text}\"')", 2)
    return body


def warn_ignored(body: dict[str, Any], answer: Any) -> None:
    """The API ignores fields it does not know: say so, since it usually is a typo."""
    if not isinstance(answer, dict):
        return
    for key in sorted(set(body) - set(answer) - WRITE_ONLY):
        typer.echo(plain(f"ollamaflow: warning: the API has no field {key!r}; it was ignored"), err=True)


def emit_json(data: Any, *, indent: int | None = 2) -> None:
    """The API's JSON, re-encoded ASCII-only: no character of it can act on a terminal."""
    typer.echo(json.dumps(data, indent=indent))


def cell(value: Any) -> str:
    """A JSON value as table text: lists joined, empty ones as '-' (see ``plain``)."""
    if value is None or value == "" or value == [] or value == {}:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return plain(", ".join(str(v) for v in value))
    if isinstance(value, list | dict):
        return plain(json.dumps(value, ensure_ascii=False))
    return plain(str(value))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, title: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, title_justify="left", header_style="bold")
    for header in headers:
        table.add_column(header, overflow="fold")
    for row in rows:  # Text: a name like "[red]" is shown, not taken for rich's markup
        table.add_row(*(Text(cell(value)) for value in row))
    Console().print(table)


def print_item(item: dict[str, Any]) -> None:
    """One object as a two-column table, field by field."""
    print_table(["Field", "Value"], [(key, value) for key, value in item.items()])


# The id and name options of `backends add|edit` and `frontends add|edit`.
Ident = Annotated[str | None, typer.Option("--id", help="Identifier (required to add).", show_default=False)]
Name = Annotated[str | None, typer.Option("--name", help="A display name.", show_default=False)]
