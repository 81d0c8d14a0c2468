"""The commands' failures without a control plane: one line on stderr, an exit code, no traceback."""

from __future__ import annotations

import socket
from pathlib import Path

from typer.testing import CliRunner

from ollamaflow.cli import app


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(*args: str):
    return CliRunner().invoke(app, list(args), env={"OLLAMAFLOW_ADMIN_TOKEN": "t"})


def _one_line(result) -> str:
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_bad_file_is_exit_2_before_any_request(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text("backends:\n  - {Identifier: a, Port: 70000}\n")
    # No control plane listens there: the file is refused before any request would fail.
    result = _run("apply", "-f", str(path), "--url", f"http://127.0.0.1:{_closed_port()}")
    assert result.exit_code == 2
    assert _one_line(result).startswith("ollamaflow apply: backends[0].Port: Expected `int` <= 65535")


def test_a_missing_file_and_an_unreachable_control_plane(tmp_path: Path) -> None:
    missing = _run("apply", "-f", str(tmp_path / "nope.yaml"))
    assert missing.exit_code == 2 and "cannot read" in _one_line(missing)
    path = tmp_path / "cluster.yaml"
    path.write_text("backends: []\n")
    url = f"http://127.0.0.1:{_closed_port()}"
    for args in (("apply", "-f", str(path)), ("export",)):
        result = _run(*args, "--url", url)
        assert result.exit_code == 1
        assert f"cannot reach the admin API at {url}" in _one_line(result)


def test_import_refuses_what_is_not_ollamaflow(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    result = _run("import", str(text), "-o", "-")
    assert result.exit_code == 2
    assert "neither an OllamaFlow SQLite database nor JSON settings" in _one_line(result)
    empty_db = tmp_path / "empty.db"
    import sqlite3

    sqlite3.connect(empty_db).execute("CREATE TABLE other (x INT)").connection.commit()
    result = _run("import", str(empty_db), "-o", "-")
    assert result.exit_code == 2 and "has no 'frontends' table" in _one_line(result)


def test_import_of_json_sections_writes_a_file(tmp_path: Path) -> None:
    settings = tmp_path / "ollamaflow.json"
    settings.write_text(
        '{"DatabaseFilename": "./ollamaflow.db", "frontends": [{"identifier": "f", "hostname": "*",'
        ' "backends": ["b"]}], "Backends": [{"Identifier": "b", "Hostname": "gpu", "Port": 11434,'
        ' "BearerToken": "secret-1", "Uptime": "00:01:00"}]}'
    )
    result = _run("import", str(settings), "-o", "-")
    assert result.exit_code == 0, result.output
    assert "BearerToken: ${B_BEARER_TOKEN}" in result.stdout and "secret-1" not in result.output
    assert "DatabaseFilename: no equivalent" in result.stderr


def test_apply_reads_stdin() -> None:
    result = CliRunner().invoke(app, ["apply", "-f", "-"], input="backends: [{Identifier: a, Ssl: maybe}]\n")
    assert result.exit_code == 2
    assert _one_line(result) == "ollamaflow apply: backends[0].Ssl: Expected `bool`, got `str`"


def test_import_options_that_only_apply_are_refused_with_o(tmp_path: Path) -> None:
    result = _run("import", str(tmp_path / "x.db"), "-o", "-", "--dry-run", "--prune")
    assert result.exit_code == 2
    assert (
        _one_line(result)
        == "ollamaflow import: --dry-run, --prune: for applying; with -o the file is only written"
    )
