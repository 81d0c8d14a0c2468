"""`ollamaflow pull MODEL --frontend ID`: start a pull through the admin API and watch it to the end."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ollamaflow.commands.admin_io import (
    DataDirOption,
    Token,
    Url,
    emit_json,
    fail,
    item_path,
    plain,
    say,
    session,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from rich.progress import Progress, TaskID

_ENDED = ("done", "failed")
_OLDEST = datetime.min.replace(tzinfo=UTC)


def pull(
    model: Annotated[
        str,
        typer.Argument(help="The model, e.g. llama3.2 or qwen3:0.6b.", metavar="MODEL", show_default=False),
    ],
    frontend: Annotated[
        str, typer.Option("--frontend", help="Pull onto this frontend's Ollama backends.", show_default=False)
    ],
    watch: Annotated[
        bool, typer.Option("--watch/--no-watch", help="Follow the progress until every pull has ended.")
    ] = True,
    url: Url = None,
    token: Token = None,
    data_dir: DataDirOption = None,
    json: Annotated[
        bool,
        typer.Option("--json", help="Print the API's answer, then the progress lines (NDJSON), not bars."),
    ] = False,
) -> None:
    """Pull MODEL onto each active, healthy Ollama backend of a frontend that lacks it, with a progress
    bar per backend and per layer, until every one has it or its pull failed (exit 1).

    The frontend's rules hold (its PullAddsRequiredModels says whether the model joins its
    RequiredModels), but not AllowModelManagement: an admin may pull anywhere. Ctrl-C stops watching,
    not the pull. With --json: the API's answer on one line, then each progress line of
    /v1.0/pulls/stream for these pulls (NDJSON).
    """
    body = {"Model": model}
    path = item_path("/v1.0/frontends", frontend) + "/pull"
    try:
        with session(url, token, data_dir) as client:
            if not watch:
                _show_start(client.post(path, body), json)
                return
            # Listen first, so that no change falls between the start and the watching.
            with client.lines("/v1.0/pulls/stream") as lines:
                started = client.post(path, body)
                _show_start(started, json)
                jobs = _follow(started, lines, json)
            _show_end(model, jobs, json)
    except KeyboardInterrupt:
        typer.echo("stopped watching; the pull goes on (`ollamaflow status` shows it)", err=True)
        raise typer.Exit(130) from None


def _show_end(model: str, jobs: dict[str, dict[str, Any]], json: bool) -> None:
    for job in jobs.values():
        if not json:
            error = f": {job['Error']}" if job.get("Error") else ""
            say(f"{job['Backend']}: {job['State']}{error}")
    failed = [ident for ident, job in jobs.items() if job["State"] == "failed"]
    if failed:
        fail(f"pulling {model} failed on {', '.join(failed)}")


def _show_start(started: dict[str, Any], json: bool) -> None:
    if json:
        emit_json(started, indent=None)  # one line: with the progress lines after it, NDJSON
        return
    for ident in started.get("Present") or ():
        say(f"{ident}: has {started['Model']} already")
    for ident in started.get("Skipped") or ():
        say(f"{ident}: skipped (an OpenAI-compatible backend cannot pull)")
    if started.get("Pulling"):
        say(f"pulling {started['Model']} onto {', '.join(started['Pulling'])}")


def _follow(started: dict[str, Any], lines: Iterator[str], json: bool) -> dict[str, dict[str, Any]]:
    """Each pulling backend's last PullOut, once every one has ended."""
    import json as json_module

    from shared.models import model_key

    key = model_key(started["Model"])
    jobs: dict[str, dict[str, Any]] = {job["Backend"]: job for job in started.get("Jobs") or ()}
    waiting = [ident for ident in started.get("Pulling") or () if ident in jobs]
    if not waiting:
        return jobs
    with _Bars(enabled=not json) as bars:
        for ident in waiting:
            bars.show(jobs[ident])
        while any(jobs[ident]["State"] not in _ENDED for ident in waiting):
            line = next(lines, None)
            if line is None:
                fail("the control plane ended the progress stream; the pull may go on")
            try:
                job = json_module.loads(line)
            except ValueError:
                continue
            ident = job.get("Backend")
            if ident not in jobs or model_key(str(job.get("Model", ""))) != key:
                continue
            if _created(job) < _created(jobs[ident]):  # a line about an earlier pull
                continue
            jobs[ident] = job
            if json:
                emit_json(job, indent=None)
            bars.show(job)
    return {ident: jobs[ident] for ident in waiting}


def _created(job: dict[str, Any]) -> datetime:
    try:
        return datetime.fromisoformat(job["CreatedUtc"])
    except (KeyError, TypeError, ValueError):
        return _OLDEST


class _Bars:
    """A rich progress bar per backend (all its layers together) and one per layer under it."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.progress: Progress | None = None
        self.tasks: dict[tuple[str, str], TaskID] = {}

    def __enter__(self) -> _Bars:
        if self.enabled:
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

            self.progress = Progress(
                # No markup: ids, digests and statuses are the servers' text (see admin_io.plain).
                TextColumn("{task.description}", markup=False),
                BarColumn(),
                DownloadColumn(),
                TextColumn("{task.fields[state]}", markup=False),
            )
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def show(self, job: dict[str, Any]) -> None:
        if self.progress is None:
            return
        ident = job["Backend"]
        state = job["State"] + (
            f" ({job['Status']})" if job.get("Status") and job["State"] == "pulling" else ""
        )
        self._bar(
            (ident, ""), plain(ident), job.get("CompletedBytes", 0), job.get("TotalBytes", 0), plain(state)
        )
        for digest, layer in sorted((job.get("Layers") or {}).items()):
            name = plain(f"  {ident} {digest.removeprefix('sha256:')[:12]}")  # rows stay in order of arrival
            self._bar((ident, digest), name, layer.get("Completed", 0), layer.get("Total", 0), "")

    def _bar(self, row: tuple[str, str], name: str, done: int, total: int, state: str) -> None:
        assert self.progress is not None
        if row not in self.tasks:
            self.tasks[row] = self.progress.add_task(name, total=None, state="")
        self.progress.update(self.tasks[row], completed=done, total=total or None, state=state)
