"""The admin commands (`ollamaflow backends|frontends|models|status`) against a real control plane,
through typer's runner: tables for people, the API's JSON with --json, one line for every failure."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from ollamaflow.cli import app
from tests.controlplane.conftest import TOKEN
from tests.controlplane.harness import RunningControlPlane

pytestmark = pytest.mark.usefixtures("admin")  # the tables start empty


@pytest.fixture
def run(controlplane: RunningControlPlane, tmp_path: Path):
    """Run `ollamaflow ARGS` against the test control plane; an empty data dir, no environment."""

    def invoke(*args: str, token: str = TOKEN, code: int = 0):
        target = ["--url", controlplane.url, "--token", token, "--data-dir", str(tmp_path)]
        result = CliRunner(
            env={"OLLAMAFLOW_URL": None, "OLLAMAFLOW_ADMIN_TOKEN": None, "COLUMNS": "200"}
        ).invoke(app, [*args, *target])
        assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
        assert "Traceback" not in result.stdout + result.stderr
        return result

    return invoke


def test_backends_and_frontends_round_trip(run, tmp_path: Path) -> None:
    added = run(
        "backends", "add", "--id", "gpu1", "--hostname", "10.0.0.5", "--port", "11434",
        "--max-parallel", "8", "--label", "fast", "--label", "a100", "--set", 'Name="GPU one"', "--json",
    )  # fmt: skip
    backend = json.loads(added.stdout)
    assert backend["Identifier"] == "gpu1" and backend["Port"] == 11434 and backend["Name"] == "GPU one"
    assert backend["MaxParallelRequests"] == 8 and backend["Labels"] == ["fast", "a100"]
    assert backend["ApiFormat"] == "Ollama"

    body = tmp_path / "oa.json"
    body.write_text(json.dumps({"Identifier": "oa1", "Hostname": "vllm.internal", "Port": 8000}))
    table = run("backends", "add", "-f", str(body), "--format", "openai", "--ssl", "--inactive")
    assert "added backend 'oa1'" in table.stdout and "https://vllm.internal:8000" in table.stdout

    listed = json.loads(run("backends", "list", "--json").stdout)
    assert [b["Identifier"] for b in listed] == ["oa1", "gpu1"]  # newest first
    assert listed[0]["ApiFormat"] == "OpenAI" and listed[0]["Ssl"] is True and listed[0]["Active"] is False
    table = run("backends", "list").stdout
    assert "gpu1" in table and "http://10.0.0.5:11434" in table and "fast, a100" in table

    changed = json.loads(run("backends", "edit", "gpu1", "--rate-limit", "20", "--active", "--json").stdout)
    assert changed["RateLimitRequestsThreshold"] == 20 and changed["MaxParallelRequests"] == 8  # PATCH
    shown = run("backends", "show", "gpu1").stdout
    assert "RateLimitRequestsThreshold" in shown and "GPU one" in shown
    assert json.loads(run("backends", "show", "gpu1", "--json").stdout) == changed
    lifted = json.loads(run("backends", "edit", "gpu1", "--max-parallel", "0", "--json").stdout)
    assert lifted["MaxParallelRequests"] == 0  # 0: unlimited

    frontend = run(
        "frontends", "add", "--id", "main", "--hostname", "*", "--backend", "gpu1", "--backend", "oa1",
        "--required-model", "llama3.2", "--load-balancing", "roundrobin", "--json",
    )  # fmt: skip
    created = json.loads(frontend.stdout)
    assert created["Backends"] == ["gpu1", "oa1"] and created["LoadBalancing"] == "RoundRobin"
    edited = json.loads(run("frontends", "edit", "main", "--backend", "gpu1", "--json").stdout)
    assert edited["Backends"] == ["gpu1"] and edited["RequiredModels"] == ["llama3.2"]
    assert "main" in run("frontends", "list").stdout

    refused = run("backends", "rm", "gpu1", code=1)
    assert refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and refused.stderr.startswith(
        "ollamaflow: cannot remove backend 'gpu1'"
    )
    assert "main" in refused.stderr  # the API's own words: which frontend lists it
    assert "removed frontend 'main'" in run("frontends", "rm", "main").stdout
    run("backends", "rm", "gpu1")
    assert [b["Identifier"] for b in json.loads(run("backends", "list", "--json").stdout)] == ["oa1"]
    missing = run("backends", "show", "gpu1", code=1)
    assert missing.stderr.count("\n") == 1 and "404" in missing.stderr and "gpu1" in missing.stderr


def test_a_wrong_token_and_api_refusals_are_one_line(run) -> None:
    denied = run("backends", "list", token="not-a-token", code=1)
    assert denied.stdout == "" and denied.stderr.count("\n") == 1
    assert "401" in denied.stderr and "--token" in denied.stderr

    run("backends", "add", "--id", "b1")
    conflict = run("backends", "add", "--id", "b1", code=1)
    assert conflict.stderr.count("\n") == 1 and "409" in conflict.stderr
    invalid = run("backends", "add", "--id", "b2", "--set", 'Hostname="a b"', code=1)
    assert invalid.stderr.count("\n") == 1 and "400" in invalid.stderr and "Hostname" in invalid.stderr


def test_usage_errors_exit_2_before_any_request(run, tmp_path: Path) -> None:
    for args, words in (
        (("backends", "add", "--hostname", "h"), "needs an Identifier"),
        (("backends", "add", "--id", "x", "--set", "Port=eighty"), "is not JSON"),
        (("backends", "add", "--id", "x", "--set", "=1"), "expected Key=JSON"),
        (("backends", "edit", "x"), "nothing to change"),
        (("frontends", "add", "-f", str(tmp_path / "absent.json")), "-f"),
    ):
        result = run(*args, code=2)
        assert words in result.stderr and result.stderr.count("\n") == 1, (args, result.stderr)
    (tmp_path / "list.json").write_text("[1, 2]")
    assert "JSON object" in run("frontends", "add", "-f", str(tmp_path / "list.json"), code=2).stderr
    assert "--format" in run("backends", "add", "--id", "x", "--format", "grpc", code=2).stderr
    assert run("backends", "list", "--json").stdout.strip() == "[]"  # nothing was written


def test_an_unknown_field_is_written_with_a_warning(run) -> None:
    result = run("frontends", "add", "--id", "f", "--set", "MaxParalel=3")
    assert "no field 'MaxParalel'" in result.stderr and "added frontend 'f'" in result.stdout


def test_unreachable_control_plane_is_one_line(tmp_path: Path) -> None:
    result = CliRunner(env={"OLLAMAFLOW_URL": None, "OLLAMAFLOW_ADMIN_TOKEN": None}).invoke(
        app, ["status", "--url", "http://127.0.0.1:9", "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert "cannot reach the admin API at http://127.0.0.1:9" in result.stderr


def test_target_from_the_data_dir_of_up(controlplane: RunningControlPlane, tmp_path: Path) -> None:
    (tmp_path / "controlplane-url").write_text(controlplane.url + "\n")
    (tmp_path / "admin-token").write_text(TOKEN + "\n")
    env = {"OLLAMAFLOW_URL": None, "OLLAMAFLOW_ADMIN_TOKEN": None}
    result = CliRunner(env=env).invoke(app, ["frontends", "list", "--json", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0 and json.loads(result.stdout) == []


def test_status_and_models(run) -> None:
    run("backends", "add", "--id", "b1")
    run("frontends", "add", "--id", "f", "--backend", "b1", "--required-model", "qwen3:0.6b")
    parts = json.loads(run("status", "--json").stdout)
    assert parts["Cluster"]["IsLeader"] is True and parts["Ready"]["status"] == "ok"
    assert [b["Identifier"] for b in parts["Backends"]] == ["b1"] and parts["Pulls"] == []
    table = run("status").stdout
    assert "(leader)" in table and "ready" in table and "1 healthy, 0 unhealthy (of 1)" in table

    # Monitoring is off here: nothing reads the backends, so models show what frontends require.
    found = json.loads(run("models", "--json").stdout)
    assert [(m["Name"], m["RequiredOn"], m["MissingOn"]) for m in found] == [("qwen3:0.6b", ["b1"], ["b1"])]
    assert "qwen3:0.6b" in run("models").stdout


async def test_the_pull_endpoint_refuses_in_the_api_s_error_shape(admin: httpx.AsyncClient) -> None:
    assert (await admin.put("/v1.0/backends", json={"Identifier": "b"})).status_code == 201
    assert (
        await admin.put("/v1.0/frontends", json={"Identifier": "f", "Backends": ["b"]})
    ).status_code == 201
    for frontend, body, status, words in (
        ("nope", {"Model": "m"}, 404, "'nope'"),
        ("f", {"Model": "   "}, 400, "Model"),
        ("f", {"Model": "m" * 257}, 400, "Model"),
        ("f", {"Model": "m", "Extra": 1}, 400, "Extra"),
        ("f", {}, 400, "Model"),
        ("f", {"Model": "m"}, 503, "does not sync models"),  # monitoring is off here
    ):
        answer = await admin.post(f"/v1.0/frontends/{frontend}/pull", json=body)
        assert answer.status_code == status, (body, answer.text)
        error = answer.json()
        assert error["StatusCode"] == status and words in error["Description"], error
    schema = (await admin.get("/schema/openapi.json")).json()
    operation = schema["paths"]["/v1.0/frontends/{identifier}/pull"]["post"]
    assert set(operation["responses"]) == {"202", "400", "401", "404", "409", "503"}
    assert schema["components"]["schemas"]["PullIn"]["properties"]["Model"]["maxLength"] == 256


def test_text_from_the_api_is_shown_not_obeyed(run) -> None:
    # A Name may hold anything but NUL: rich markup and terminal escapes are printed as text.
    name = "[/]\x1b[31mred[bold]\nnext"
    run("backends", "add", "--id", "b[1]", "--set", f"Name={json.dumps(name)}")
    table = run("backends", "list").stdout
    assert "[/]?[31mred[bold] next" in table and "b[1]" in table and "\x1b" not in table
    shown = json.loads(run("backends", "show", "b[1]", "--json").stdout)
    assert shown["Name"] == name
