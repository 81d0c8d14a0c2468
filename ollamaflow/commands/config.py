"""`ollamaflow apply`, `ollamaflow export` and `ollamaflow import`: configuration as code.

The work is in ``ollamaflow.config_file`` (imported when a command runs, like every command module);
these functions read options, print, and turn every failure into one line on stderr and an exit code:
2 for a file or input that cannot be used (nothing changed), 1 for the admin API failing.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from ollamaflow.config_file.model import ClusterSpec

__all__ = ["apply", "export", "import_"]

Url = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="The control plane's admin URL. [env OLLAMAFLOW_URL; default: `up`'s, or 127.0.0.1:43412]",
    ),
]
Token = Annotated[
    str | None,
    typer.Option("--token", help="An admin token. [env OLLAMAFLOW_ADMIN_TOKEN; default: `up`'s]"),
]
DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Where `ollamaflow up` keeps its URL and token. [default: .ollamaflow]"),
]
DryRun = Annotated[
    bool,
    typer.Option(
        "--dry-run", help="Show what would change (create, update with fields, delete); change nothing."
    ),
]
Prune = Annotated[
    bool,
    typer.Option(
        "--prune",
        help="Also delete the frontends and backends the file does not list, and its API keys if it has "
        "an apikeys list.",
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print the plan and outcome as JSON, for scripts.")]
Resend = Annotated[
    bool,
    typer.Option(
        "--resend-secrets",
        help="Send every backend secret of the file again (to rotate values); otherwise a secret is sent "
        "only when its backend is created or the secret's names change.",
    ),
]


def _fail(command: str, message: str, code: int) -> typer.Exit:
    typer.echo(f"ollamaflow {command}: {message}", err=True)
    return typer.Exit(code)


def _read_input(path: str, limit: int) -> bytes:
    """The file's bytes (``-``: stdin), refused beyond ``limit``."""
    import sys

    from ollamaflow.config_file.errors import FileError

    if path == "-":
        data = sys.stdin.buffer.read(limit + 1)
    else:
        try:
            with open(path, "rb") as handle:
                data = handle.read(limit + 1)
        except OSError as exc:
            raise FileError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise FileError(f"{path} is larger than the limit of {limit} bytes")
    return data


def _write_output(path: str, text: str, *, mode: int = 0o644) -> None:
    """``text`` to ``path`` (``-``: stdout), replacing it whole (written aside, then renamed)."""
    import os
    import tempfile

    if path == "-":
        typer.echo(text, nl=False)
        return
    target = Path(path)
    fd, temporary = tempfile.mkstemp(dir=target.parent or Path("."), prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _apply_spec(
    command: str,
    spec: ClusterSpec,
    *,
    source: str,
    environ: Mapping[str, str],
    url: str | None,
    token: str | None,
    data_dir: Path | None,
    dry_run: bool,
    prune: bool,
    as_json: bool,
    resend_secrets: bool,
) -> None:
    """Plan ``spec`` against the control plane, print the plan, and carry it out unless ``dry_run``."""
    from rich.console import Console
    from rich.markup import escape

    from ollamaflow.admin_client import AdminClient, AdminError, resolve_target
    from ollamaflow.config_file.errors import FileError
    from ollamaflow.config_file.plan import Action, body, make_plan, missing_variables
    from ollamaflow.config_file.render import plan_json, print_done, print_plan
    from ollamaflow.config_file.run import ApplyError, carry_out, read_state

    target = resolve_target(url, token, data_dir)
    console = Console(highlight=False, soft_wrap=True)
    keys: dict[str, str] = {}

    def report(applied: int) -> None:
        text = plan_json(plan, source=source, target=target.url, dry_run=dry_run, applied=applied, keys=keys)
        typer.echo(text)

    def done(action: Action, answer: Any) -> None:
        # A new API key is shown once, in the create's answer: print it at once, so that a later
        # failure cannot lose it.
        if action.kind == "apikey" and action.op == "create" and isinstance(answer, dict):
            keys[action.identifier] = str(answer.get("Key", ""))
            if not as_json:
                console.print(
                    f"  API key [bold]{escape(action.identifier)}[/bold]: {escape(keys[action.identifier])} "
                    "(shown only now: keep it)"
                )

    try:
        with AdminClient(target) as client:
            state = read_state(client)
            plan = make_plan(
                spec,
                state.frontends,
                state.backends,
                state.apikeys,
                prune=prune,
                resend_secrets=resend_secrets,
            )
            missing = missing_variables(plan, spec, environ)
            problem = None
            if missing:
                needers = ", ".join(missing)
                problem = (
                    f"environment variable{'s' if len(missing) > 1 else ''} {needers} not set: the plan "
                    "sends these backend secrets (nothing was changed)"
                )
            else:
                try:  # every body resolves (values checked) before the first change
                    for action in plan.actions:
                        if action.op != "delete":
                            body(action, spec, environ)
                except FileError as exc:
                    problem = f"{exc} (nothing was changed)"
            if dry_run or problem:
                if as_json:
                    report(0)
                elif dry_run:
                    print_plan(console, plan, source=source, target=target.url, dry_run=True)
                if problem:
                    raise _fail(command, problem, 2)
                return
            if not as_json:
                print_plan(console, plan, source=source, target=target.url, dry_run=False)
            try:
                carry_out(client, plan, spec, environ, on_done=done)
            except ApplyError as exc:
                if as_json:
                    report(exc.done)
                raise _fail(command, str(exc), 1) from None
            if as_json:
                report(len(plan.actions))
            else:
                print_done(console, plan)
    except FileError as exc:
        raise _fail(command, str(exc), 2) from None
    except AdminError as exc:
        raise _fail(command, str(exc), 1) from None


def apply(
    file: Annotated[
        str,
        typer.Option("-f", "--file", help="The cluster file (YAML; `-` reads stdin).", show_default=False),
    ],
    dry_run: DryRun = False,
    prune: Prune = False,
    as_json: Json = False,
    resend_secrets: Resend = False,
    url: Url = None,
    token: Token = None,
    data_dir: DataDir = None,
) -> None:
    """Make the control plane's frontends and backends (and API keys, if listed) match a cluster file.

    Creates what is missing, updates what differs (only the fields that differ), and with --prune
    deletes what the file lacks; a new API key is printed once, when created. A second apply of the
    same file changes nothing and says so. Backend secrets come from the environment
    (`BearerToken: ${GPU1_TOKEN}`); a variable the plan needs but that is not set stops it before any
    change. See README, "Configuration as code".
    """
    import os

    from ollamaflow.config_file.errors import FileError
    from ollamaflow.config_file.model import MAX_FILE_BYTES, parse

    try:
        spec = parse(_read_input(file, MAX_FILE_BYTES), source=file)
    except FileError as exc:
        raise _fail("apply", str(exc), 2) from None
    _apply_spec(
        "apply",
        spec,
        source=file,
        environ=os.environ,
        url=url,
        token=token,
        data_dir=data_dir,
        dry_run=dry_run,
        prune=prune,
        as_json=as_json,
        resend_secrets=resend_secrets,
    )


def export(
    output: Annotated[
        str, typer.Option("-o", "--output", help="Where to write the cluster file (`-`: stdout).")
    ] = "-",
    url: Url = None,
    token: Token = None,
    data_dir: DataDir = None,
) -> None:
    """Write the control plane's frontends, backends and API keys' settings as a cluster file.

    Fields at their defaults are left out; API keys themselves are never shown. Backend secrets cannot
    be read back: each becomes an environment reference with a generated name (listed in the file's
    header). Applying the file unchanged changes nothing and needs none of those variables.
    """
    from ollamaflow.admin_client import AdminClient, AdminError, resolve_target
    from ollamaflow.config_file.export import cluster_document
    from ollamaflow.config_file.run import read_state

    target = resolve_target(url, token, data_dir)
    try:
        with AdminClient(target) as client:
            state = read_state(client)
        text = cluster_document(state.frontends, state.backends, state.apikeys)
        _write_output(output, text)
    except AdminError as exc:
        raise _fail("export", str(exc), 1) from None
    except OSError as exc:
        raise _fail("export", f"cannot write {output}: {exc.strerror or exc}", 1) from None
    if output != "-":
        typer.echo(
            f"wrote {len(state.frontends)} frontends, {len(state.backends)} backends and "
            f"{len(state.apikeys)} API keys to {output}",
            err=True,
        )


def import_(
    sources: Annotated[
        list[Path],
        typer.Argument(
            help="OllamaFlow's SQLite database (ollamaflow.db) and/or its settings (ollamaflow.json).",
            show_default=False,
        ),
    ],
    output: Annotated[
        str | None,
        typer.Option(
            "-o",
            "--output",
            help="Write the converted cluster file there (`-`: stdout) instead of applying it.",
        ),
    ] = None,
    env_file: Annotated[
        Path | None,
        typer.Option(
            "--env-file",
            help="With -o: also write the backend secrets found as NAME=value lines to this file "
            "(owner-only).",
        ),
    ] = None,
    dry_run: DryRun = False,
    prune: Prune = False,
    as_json: Json = False,
    resend_secrets: Resend = False,
    url: Url = None,
    token: Token = None,
    data_dir: DataDir = None,
) -> None:
    """Move an OllamaFlow (C#) installation over: its frontends and backends, in one command.

    Reads the SQLite database (tables frontends and backends) and/or ollamaflow.json (server settings;
    Frontends and Backends lists there are taken too), converts them to a cluster file, and applies it
    (secret values straight from the database), or writes it with -o (secrets as environment
    references; --env-file keeps their values). Prints a note for every setting without an equivalent.
    """
    from ollamaflow.config_file.errors import FileError
    from ollamaflow.config_file.export import dump
    from ollamaflow.config_file.original import convert
    from ollamaflow.config_file.original_files import read_source

    if len(sources) > 4:
        raise _fail("import", "give at most 4 files (a database and a settings file)", 2)
    if env_file is not None and output is None:
        raise _fail("import", "--env-file goes with -o (when applying, secrets go straight to the API)", 2)
    applying = [
        flag
        for flag, on in (
            ("--dry-run", dry_run),
            ("--prune", prune),
            ("--json", as_json),
            ("--resend-secrets", resend_secrets),
        )
        if on
    ]
    if output is not None and applying:
        raise _fail("import", f"{', '.join(applying)}: for applying; with -o the file is only written", 2)
    try:
        converted = convert(read_source(sources))
    except FileError as exc:
        raise _fail("import", str(exc), 2) from None
    for note in converted.notes:
        typer.echo(f"note: {note}", err=True)
    origin = "imported from OllamaFlow (" + ", ".join(str(s) for s in sources) + ")"
    if output is not None:
        try:
            _write_output(output, dump(converted.document, list(converted.secrets), origin=origin))
            if env_file is not None:
                lines = "".join(f"{name}={value}\n" for name, value in converted.secrets.items())
                _write_output(str(env_file), lines, mode=0o600)
        except OSError as exc:
            raise _fail("import", f"cannot write: {exc.strerror or exc}", 1) from None
        if converted.secrets and env_file is None:
            typer.echo(
                f"note: {len(converted.secrets)} backend secrets are environment references now; their "
                "values are in the source database (or use --env-file)",
                err=True,
            )
        return
    _apply_spec(
        "import",
        converted.spec,
        source=" + ".join(str(s) for s in sources),
        environ=converted.secrets,
        url=url,
        token=token,
        data_dir=data_dir,
        dry_run=dry_run,
        prune=prune,
        as_json=as_json,
        resend_secrets=resend_secrets,
    )
