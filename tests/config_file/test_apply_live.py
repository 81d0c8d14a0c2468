"""``ollamaflow apply``, ``export`` and ``import`` against a real control plane (loopback HTTP, real
PostgreSQL), run in-process through the CLI."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from ollamaflow.cli import app
from tests.config_file.conftest import TOKEN
from tests.controlplane.harness import RunningControlPlane
from tests.support.secrets import stored_backend_secrets

CLUSTER = """\
backends:
  - Identifier: gpu1
    Hostname: 10.0.0.5
    Port: 11434
    MaxParallelRequests: 8
    BearerToken: ${GPU1_TOKEN}
    Headers: {X-Api-Key: "${GPU1_KEY}"}
  - Identifier: gpu2
    Hostname: 10.0.0.6
    Port: 11434
    Labels: [eu]
frontends:
  - Identifier: main
    Hostname: "*"
    Backends: [gpu1, gpu2]
    LoadBalancing: LeastConnections
    StickyHeaders: [X-Conversation-Id]
"""
SECRETS = {"GPU1_TOKEN": "tok-81f3", "GPU1_KEY": "key-2c9a"}


def _run(plane: RunningControlPlane, *args: str, env: dict[str, str] | None = None):
    result = CliRunner().invoke(app, [*args, "--url", plane.url, "--token", TOKEN], env=env or {})
    return result


def _state(admin_url: str) -> tuple[list[dict], list[dict]]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    frontends = httpx.get(admin_url + "/v1.0/frontends", headers=headers).json()
    backends = httpx.get(admin_url + "/v1.0/backends", headers=headers).json()
    strip = ("CreatedUtc", "LastUpdateUtc")
    return (
        sorted(({k: v for k, v in f.items() if k not in strip} for f in frontends), key=str),
        sorted(({k: v for k, v in b.items() if k not in strip} for b in backends), key=str),
    )


@pytest.fixture
def cluster_file(tmp_path: Path) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(CLUSTER)
    return path


def test_apply_export_apply_is_a_no_op(
    controlplane: RunningControlPlane, clean_database_url: str, cluster_file: Path, tmp_path: Path
) -> None:
    first = _run(controlplane, "apply", "-f", str(cluster_file), env=SECRETS)
    assert first.exit_code == 0, first.output
    assert "3 changes made: 3 create" in first.stdout
    frontends, backends = _state(controlplane.url)
    assert [b["Identifier"] for b in backends] == ["gpu1", "gpu2"]
    gpu1 = next(b for b in backends if b["Identifier"] == "gpu1")
    assert gpu1["HasBearerToken"] and gpu1["Headers"] == {"X-Api-Key": "<redacted>"}
    assert frontends[0]["StickyHeaders"] == ["x-conversation-id"]

    # The same file again, without the secrets' variables: nothing to do, nothing needed.
    again = _run(controlplane, "apply", "-f", str(cluster_file))
    assert again.exit_code == 0, again.output
    assert "No changes" in again.stdout

    exported = tmp_path / "exported.yaml"
    out = _run(controlplane, "export", "-o", str(exported))
    assert out.exit_code == 0, out.output
    text = exported.read_text()
    assert "tok-81f3" not in text and "key-2c9a" not in text
    assert "${GPU1_BEARER_TOKEN}" in text and "GPU1_HEADER_X_API_KEY" in text
    before = _state(controlplane.url)
    back = _run(controlplane, "apply", "-f", str(exported), "--json")
    assert back.exit_code == 0, back.output
    report = json.loads(back.stdout)
    assert report["actions"] == [] and report["changed"] is False
    assert _state(controlplane.url) == before


def test_dry_run_changes_nothing_and_prune_deletes_in_order(
    controlplane: RunningControlPlane, clean_database_url: str, cluster_file: Path, tmp_path: Path
) -> None:
    assert _run(controlplane, "apply", "-f", str(cluster_file), env=SECRETS).exit_code == 0
    smaller = tmp_path / "smaller.yaml"
    smaller.write_text(
        "backends:\n  - {Identifier: gpu2, Hostname: 10.0.0.6, Port: 11435, Labels: [eu]}\n"
        "frontends:\n  - {Identifier: other, Hostname: '*', Backends: [gpu2]}\n"
    )
    before = _state(controlplane.url)
    dry = _run(controlplane, "apply", "-f", str(smaller), "--prune", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    steps = [(a["op"], a["kind"], a["identifier"]) for a in json.loads(dry.stdout)["actions"]]
    # Frontend 'main' goes before 'other' takes its Hostname, and before gpu1 (which it names) goes.
    assert steps == [
        ("update", "backend", "gpu2"),
        ("delete", "frontend", "main"),
        ("create", "frontend", "other"),
        ("delete", "backend", "gpu1"),
    ]
    assert json.loads(dry.stdout)["actions"][0]["fields"] == {"Port": {"from": 11434, "to": 11435}}
    assert _state(controlplane.url) == before

    human = _run(controlplane, "apply", "-f", str(smaller), "--prune", "--dry-run")
    assert "Nothing was changed (--dry-run)" in human.stdout and "delete backend gpu1" in human.stdout

    done = _run(controlplane, "apply", "-f", str(smaller), "--prune")
    assert done.exit_code == 0, done.output
    frontends, backends = _state(controlplane.url)
    assert [f["Identifier"] for f in frontends] == ["other"]
    assert [(b["Identifier"], b["Port"]) for b in backends] == [("gpu2", 11435)]
    # Without --prune, what the file lacks stays.
    assert "No changes" in _run(controlplane, "apply", "-f", str(smaller)).stdout


def test_missing_variable_stops_before_any_change(
    controlplane: RunningControlPlane, clean_database_url: str, cluster_file: Path
) -> None:
    result = _run(controlplane, "apply", "-f", str(cluster_file), env={"GPU1_TOKEN": "x"})
    assert result.exit_code == 2
    assert "GPU1_KEY not set" in result.stderr and "Traceback" not in result.output
    assert _state(controlplane.url) == ([], [])


def test_changed_secret_names_send_the_secret(
    controlplane: RunningControlPlane, clean_database_url: str, cluster_file: Path, database_for
) -> None:
    assert _run(controlplane, "apply", "-f", str(cluster_file), env=SECRETS).exit_code == 0
    changed = cluster_file.read_text().replace('{X-Api-Key: "${GPU1_KEY}"}', '{X-Other: "${OTHER}"}')
    cluster_file.write_text(changed)
    result = _run(controlplane, "apply", "-f", str(cluster_file), env={"OTHER": "v-77"})
    assert result.exit_code == 0, result.output
    assert database_for("gpu1") == ("tok-81f3", {"X-Other": "v-77"})
    rotated = _run(
        controlplane,
        "apply",
        "-f",
        str(cluster_file),
        "--resend-secrets",
        env={"GPU1_TOKEN": "t2", "OTHER": "v2"},
    )
    assert rotated.exit_code == 0, rotated.output
    assert database_for("gpu1") == ("t2", {"X-Other": "v2"})


@pytest.fixture
def database_for(clean_database_url: str):
    def stored(identifier: str) -> tuple[str | None, dict[str, str]]:
        token, _, headers = stored_backend_secrets(clean_database_url, identifier)
        return token, headers

    return stored


def _ollamaflow_db(path: Path) -> None:
    """A database laid out as OllamaFlow's SetupQueries makes it, with one frontend and two backends."""
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE 'frontends' (identifier VARCHAR(128) NOT NULL UNIQUE, name VARCHAR(128),
          hostname VARCHAR(128) NOT NULL, timeoutms INT NOT NULL, loadbalancing VARCHAR(32) NOT NULL,
          blockhttp10 INT NOT NULL, maxrequestbodysize INT NOT NULL, backends VARCHAR(2048) NOT NULL,
          requiredmodels VARCHAR(2048) NOT NULL, logrequestfull INT NOT NULL, logrequestbody INT NOT NULL,
          logresponsebody INT NOT NULL, usestickysessions INT NOT NULL DEFAULT 0,
          stickysessionexpirationms INT NOT NULL DEFAULT 1800000,
          pinnedembeddingsprops VARCHAR(2048) NOT NULL,
          pinnedcompletionsprops VARCHAR(2048) NOT NULL, allowretries INT NOT NULL DEFAULT 1,
          allowembeddings INT NOT NULL DEFAULT 1, allowcompletions INT NOT NULL DEFAULT 1,
          active INT NOT NULL, createdutc VARCHAR(64), lastupdateutc VARCHAR(64));
        CREATE TABLE 'backends' (identifier VARCHAR(128) NOT NULL UNIQUE, name VARCHAR(128),
          hostname VARCHAR(128), port INT NOT NULL, ssl INT NOT NULL, unhealthythreshold INT NOT NULL,
          healthythreshold INT NOT NULL, healthcheckmethod VARCHAR(16) NOT NULL,
          healthcheckurl VARCHAR(256) NOT NULL, maxparallelrequests INT NOT NULL,
          ratelimitthreshold INT NOT NULL, logrequestfull INT NOT NULL, logrequestbody INT NOT NULL,
          logresponsebody INT NOT NULL, apiformat VARCHAR(32) DEFAULT 'Ollama', labels VARCHAR(512) NOT NULL,
          pinnedembeddingsprops VARCHAR(2048) NOT NULL, pinnedcompletionsprops VARCHAR(2048) NOT NULL,
          bearertoken VARCHAR(512), querystring VARCHAR(2048), headers VARCHAR(4096) NOT NULL DEFAULT '{}',
          allowembeddings INT NOT NULL DEFAULT 1, allowcompletions INT NOT NULL DEFAULT 1,
          active INT NOT NULL, createdutc VARCHAR(64), lastupdateutc VARCHAR(64));
        INSERT INTO frontends VALUES ('frontend1', 'My frontend', '*', 60000, 'RoundRobin', 1, 536870912,
          '["backend1","backend2","gone"]', '["llama3.2"]', 0, 0, 0, 1, 600000, '{}',
          '{"options":{"num_ctx":4096}}', 1, 1, 1, 1,
          '2025-06-07 10:00:00.000000', '2025-06-07 10:00:00.000000');
        INSERT INTO backends VALUES ('backend1', 'Ollama 1', 'localhost', 11434, 0, 2, 2, 'GET', '/', 4, 10,
          0, 0, 0, 'Ollama', '["gpu"]', '{}', '{}', NULL, NULL, '{}', 1, 1, 1,
          '2025-06-07 10:00:00.000000', '2025-06-07 10:00:00.000000');
        INSERT INTO backends VALUES ('backend2', '', 'vast.example.com', 8000, 1, 3, 2, 'HEAD',
          '/v1/models', 8, 20,
          0, 0, 0, 'OpenAI', '[]', '{}', '{}', 'vast-token-1', 'token=vast-q-2', '{"X-Key":"hdr-3"}', 1, 0, 1,
          '2025-06-07 10:00:00.000000', '2025-06-07 10:00:00.000000');
        """
    )
    conn.commit()
    conn.close()


def test_import_of_an_ollamaflow_database(
    controlplane: RunningControlPlane, clean_database_url: str, tmp_path: Path, database_for
) -> None:
    db = tmp_path / "ollamaflow.db"
    _ollamaflow_db(db)
    settings = tmp_path / "ollamaflow.json"
    settings.write_text(
        json.dumps(
            {
                "Webserver": {"Port": 43411},
                "AdminBearerTokens": ["ollamaflowadmin"],
                "StickyHeaders": ["X-Session"],
            }
        )
    )
    dry = _run(controlplane, "import", str(settings), str(db), "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "create frontend frontend1" in dry.stdout and _state(controlplane.url) == ([], [])
    for note in (
        "Webserver: no equivalent",
        "AdminBearerTokens: not imported",
        "'gone'",
        "MaxParallelRequests,",
    ):
        assert note in dry.stderr

    done = _run(controlplane, "import", str(settings), str(db))
    assert done.exit_code == 0, done.output
    frontends, backends = _state(controlplane.url)
    (frontend,) = frontends
    assert frontend["Backends"] == ["backend1", "backend2"] and frontend["LoadBalancing"] == "RoundRobin"
    assert frontend["StickyHeaders"] == ["x-session"] and frontend["UseStickySessions"] is True
    assert frontend["PinnedCompletionsProperties"] == {"options": {"num_ctx": 4096}}
    backend2 = next(b for b in backends if b["Identifier"] == "backend2")
    assert (backend2["Ssl"], backend2["ApiFormat"], backend2["AllowCompletions"]) == (True, "OpenAI", False)
    assert backend2["Querystring"] == "token=<redacted>"
    # OllamaFlow's never-enforced defaults become unlimited; chosen values stay limits.
    backend1 = next(b for b in backends if b["Identifier"] == "backend1")
    assert (backend1["MaxParallelRequests"], backend1["RateLimitRequestsThreshold"]) == (0, 0)
    assert (backend2["MaxParallelRequests"], backend2["RateLimitRequestsThreshold"]) == (8, 20)
    assert database_for("backend2") == ("vast-token-1", {"X-Key": "hdr-3"})
    # Importing again changes nothing; the written file, applied, changes nothing either.
    assert "No changes" in _run(controlplane, "import", str(settings), str(db)).stdout
    out = tmp_path / "imported.yaml"
    env = tmp_path / "imported.env"
    written = _run(controlplane, "import", str(settings), str(db), "-o", str(out), "--env-file", str(env))
    assert written.exit_code == 0, written.output
    assert "vast-token-1" not in out.read_text() and "vast-token-1" in env.read_text()
    assert env.stat().st_mode & 0o077 == 0
    assert "No changes" in _run(controlplane, "apply", "-f", str(out)).stdout


def test_api_keys_are_created_once_and_exported(
    controlplane: RunningControlPlane, clean_database_url: str, cluster_file: Path, tmp_path: Path
) -> None:
    with_keys = cluster_file.read_text() + "apikeys:\n  - {Identifier: team-a, Frontends: [main]}\n"
    cluster_file.write_text(with_keys)
    first = _run(controlplane, "apply", "-f", str(cluster_file), "--json", env=SECRETS)
    assert first.exit_code == 0, first.output
    (created,) = [a for a in json.loads(first.stdout)["actions"] if a["kind"] == "apikey"]
    key = created["key"]
    assert key.startswith("ofk_")
    # The API shows only the key's first characters from now on.
    shown = httpx.get(controlplane.url + "/v1.0/apikeys", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert [(k["Identifier"], k["Frontends"], key.startswith(k["KeyPrefix"])) for k in shown] == [
        ("team-a", ["main"], True)
    ]
    assert "No changes" in _run(controlplane, "apply", "-f", str(cluster_file)).stdout
    exported = tmp_path / "exported.yaml"
    assert _run(controlplane, "export", "-o", str(exported)).exit_code == 0
    assert "apikeys:\n- Identifier: team-a\n  Frontends:\n  - main\n" in exported.read_text()
    assert "No changes" in _run(controlplane, "apply", "-f", str(exported), "--prune").stdout
    # With an empty list and --prune the key goes; a file without the list leaves keys alone.
    without = tmp_path / "without.yaml"
    without.write_text(with_keys.split("apikeys:")[0])
    assert "No changes" in _run(controlplane, "apply", "-f", str(without), "--prune").stdout
    without.write_text(with_keys.split("apikeys:")[0] + "apikeys: []\n")
    pruned = _run(controlplane, "apply", "-f", str(without), "--prune")
    assert "- delete apikey team-a" in pruned.stdout
    assert (
        httpx.get(controlplane.url + "/v1.0/apikeys", headers={"Authorization": f"Bearer {TOKEN}"}).json()
        == []
    )


def test_a_change_the_api_refuses_stops_there_and_says_what_was_done(
    controlplane: RunningControlPlane, clean_database_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "swap.yaml"
    path.write_text(
        "backends: [{Identifier: b, Hostname: 10.0.0.9}]\n"
        "frontends: [{Identifier: a, Hostname: x.example}, {Identifier: c, Hostname: y.example}]\n"
    )
    assert _run(controlplane, "apply", "-f", str(path)).exit_code == 0
    # Swapping two Hostnames cannot be done one frontend at a time: the API refuses the first PATCH.
    path.write_text(
        "backends: [{Identifier: b, Hostname: 10.0.0.10}]\n"
        "frontends: [{Identifier: a, Hostname: y.example}, {Identifier: c, Hostname: x.example}]\n"
    )
    result = _run(controlplane, "apply", "-f", str(path))
    assert result.exit_code == 1
    line = _one_line_error(result)
    assert line.startswith("ollamaflow apply: update frontend 'a' failed (1 of 3 changes made before it): ")
    assert "409" in line and "frontend 'c' already has Hostname" in line
    frontends, backends = _state(controlplane.url)
    assert backends[0]["Hostname"] == "10.0.0.10"
    assert {f["Identifier"]: f["Hostname"] for f in frontends} == {"a": "x.example", "c": "y.example"}


def _one_line_error(result) -> str:
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]
