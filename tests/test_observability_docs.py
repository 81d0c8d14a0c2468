"""Every metric the planes export is documented in the README, the Grafana dashboard uses only
metrics that exist, and compose's observability profile adds Prometheus and Grafana, only when asked."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from controlplane.app import create_app
from controlplane.metrics import ControlPlaneMetrics
from controlplane.settings import Settings
from dataplane.app import DataPlane
from dataplane.settings import DataPlaneSettings
from tests.dataplane.harness import content, snapshot_bytes
from tests.support.signing import SnapshotKeys
from tests.test_compose import SECRETS, _compose

_NAME = re.compile(r"ollamaflow_(?:dataplane|controlplane)_[a-z_]+")
_SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def _exported(keys: SnapshotKeys) -> dict[str, str]:
    """Family name -> its type, for both planes, from registries built in this process (nothing runs)."""
    dataplane = DataPlane(DataPlaneSettings(dataplane_id="docs", snapshot_public_key_files=(keys.public,)))
    assert dataplane.metrics is not None
    # With a snapshot applied, so that its age and time of application are exported too.
    assert dataplane.state.apply(
        snapshot_bytes(content({"b": "http://127.0.0.1:1"}), 1), source="test", save=False
    )
    app = create_app(Settings(database_url="postgresql+psycopg://u@127.0.0.1:1/x", admin_tokens=("t" * 32,)))
    controlplane = ControlPlaneMetrics(app.state.plane)
    families: dict[str, str] = {}
    for registry in (dataplane.metrics.registry, controlplane.registry):
        for family in text_string_to_metric_families(generate_latest(registry).decode()):
            families[family.name] = family.type
    return families


def _base(name: str) -> str:
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def test_every_exported_metric_is_documented(repo_root: Path, snapshot_keys: SnapshotKeys) -> None:
    readme = (repo_root / "README.md").read_text()
    families = _exported(snapshot_keys)
    assert len(families) > 40
    missing = []
    for name, kind in families.items():
        short = name.removeprefix("ollamaflow_dataplane_").removeprefix("ollamaflow_controlplane_")
        shown = f"`{short}_total`" if kind == "counter" else f"`{short}`"
        if shown not in readme:
            missing.append(shown)
    assert not missing, f"metrics missing from the README's tables: {missing}"


def test_the_dashboard_uses_only_exported_metrics(repo_root: Path, snapshot_keys: SnapshotKeys) -> None:
    dashboard = json.loads((repo_root / "deploy/grafana/ollamaflow.json").read_text())
    families = _exported(snapshot_keys)
    used = {
        _base(name)
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        for name in _NAME.findall(target["expr"])
    }
    assert len(used) >= 15
    assert used <= set(families), used - set(families)


@pytest.fixture(scope="module")
def compose_cli() -> Path:
    import compose

    return Path(compose.__file__).parent / "docker-compose"


def test_the_observability_profile_adds_prometheus_and_grafana(
    compose_cli: Path, repo_root: Path, tmp_path: Path
) -> None:
    compose_binary = compose_cli
    plain = _compose(compose_binary, repo_root, tmp_path, SECRETS, "config", "--format", "json")
    assert plain.returncode == 0, plain.stderr
    assert not {"prometheus", "grafana"} & set(json.loads(plain.stdout)["services"])
    profiled = _compose(
        compose_binary,
        repo_root,
        tmp_path,
        SECRETS,
        "--profile",
        "observability",
        "config",
        "--format",
        "json",
    )
    assert profiled.returncode == 0, profiled.stderr
    services = json.loads(profiled.stdout)["services"]
    mounts = {v["target"]: v["source"] for v in services["grafana"]["volumes"] if v["type"] == "bind"}
    assert mounts["/etc/grafana/dashboards/ollamaflow.json"].endswith("deploy/grafana/ollamaflow.json")
    prometheus = {v["target"]: v["source"] for v in services["prometheus"]["volumes"] if v["type"] == "bind"}
    assert prometheus["/etc/prometheus/prometheus.yml"].endswith("deploy/prometheus/prometheus.yml")
    for service in ("prometheus", "grafana"):  # on the loopback unless told otherwise
        assert all(port["host_ip"] == "127.0.0.1" for port in services[service]["ports"])
    # Prometheus finds every data-plane replica through Docker's DNS, and the control plane.
    config = (repo_root / "deploy/prometheus/prometheus.yml").read_text()
    assert 'names: ["dataplane"]' in config and "controlplane:43412" in config
