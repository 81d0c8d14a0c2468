"""The parts of ``ollamaflow up`` that need no cluster: port plan, data directory, refusals."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

from ollamaflow.datadir import DataDir
from ollamaflow.demo import demo_revision
from ollamaflow.processes import free_port
from ollamaflow.up import dataplane_ports, dataplane_stop_timeout
from tests.up.harness import start_up


def test_dataplane_ports_skip_the_controlplane_port() -> None:
    assert dataplane_ports(43411, 1, 43412) == [43411]
    assert dataplane_ports(43411, 3, 43412) == [43411, 43413, 43414]
    assert dataplane_ports(5000, 2, 6000) == [5000, 5001]


def test_data_planes_get_their_drain_timeout_and_a_margin_to_stop(tmp_path: Path) -> None:
    assert dataplane_stop_timeout({}, 10.0) == 40.0  # the 30 s default drain + 10 s
    assert dataplane_stop_timeout({"OLLAMAFLOW_DRAIN_TIMEOUT": "5"}, 10.0) == 15.0
    assert dataplane_stop_timeout({"OLLAMAFLOW_DRAIN_TIMEOUT": "0"}, 12.0) == 12.0  # never below the rest
    config = tmp_path / "dataplane.toml"
    config.write_text("drain_timeout = 50\n")
    assert dataplane_stop_timeout({"OLLAMAFLOW_CONFIG": str(config)}, 10.0) == 60.0
    assert dataplane_stop_timeout({"OLLAMAFLOW_DRAIN_TIMEOUT": "soon"}, 10.0) == 40.0  # its own error


def test_up_refuses_data_plane_ports_beyond_the_range(tmp_path: Path) -> None:
    args = ["--data-dir", str(tmp_path / "data"), "--port", "65535", "--dataplanes", "2"]
    up = start_up([*args, "--controlplane-port", str(free_port())], tmp_path / "up.log")
    assert up.proc.wait(timeout=60) == 1
    assert "port 65536 (data plane 2, counting up from --port) is not a TCP port number" in up.output


def test_admin_token_is_generated_once_private_and_reused(tmp_path: Path) -> None:
    data = DataDir(tmp_path)
    token = data.admin_token()
    assert len(token) >= 32
    assert stat.S_IMODE(os.stat(data.admin_token_file).st_mode) == 0o600
    assert DataDir(tmp_path).admin_token() == token
    other = DataDir(tmp_path / "other")
    other.create()
    assert other.admin_token() != token


def test_up_refuses_a_port_in_use_before_starting_anything(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with socket.socket() as spare:
            spare.bind(("127.0.0.1", 0))
            cp_port = spare.getsockname()[1]
        up = start_up(
            ["--data-dir", str(tmp_path / "data"), "--port", str(port), "--controlplane-port", str(cp_port)],
            tmp_path / "up.log",
        )
        assert up.proc.wait(timeout=60) == 1
    assert f"port {port} on 127.0.0.1 is already in use (--port)" in up.output
    assert not (tmp_path / "data" / "postgres").exists()


def test_up_refuses_a_data_dir_in_use(tmp_path: Path) -> None:
    data = DataDir(tmp_path / "data")
    data.create()
    with data.locked():
        args = [
            "--data-dir",
            str(data.root),
            "--port",
            str(free_port()),
            "--controlplane-port",
            str(free_port()),
        ]
        up = start_up(args, tmp_path / "up.log")
        assert up.proc.wait(timeout=60) == 1
    assert f"another `ollamaflow up` is using {data.root}" in up.output


def test_demo_revision_only_once_the_snapshot_routes_to_these_simulators() -> None:
    def snapshot(revision: int, ports: list[int], backends: list[str]) -> dict[str, object]:
        return {
            "Revision": revision,
            "Content": {
                "frontends": [{"id": "demo", "hostname": "*", "backends": backends}],
                "backends": [
                    {"id": f"demo-sim-{i}", "base_url": f"http://127.0.0.1:{port}"}
                    for i, port in enumerate(ports, start=1)
                ],
            },
        }

    ids = ["demo-sim-1", "demo-sim-2"]
    assert demo_revision(snapshot(7, [4001, 4002], ids), [4001, 4002]) == 7
    # Still last run's simulator ports: not yet.
    assert demo_revision(snapshot(6, [3001, 3002], ids), [4001, 4002]) is None
    assert demo_revision(snapshot(5, [4001, 4002], ids[:1]), [4001, 4002]) is None
    assert demo_revision({"Revision": 1, "Content": {"frontends": [], "backends": []}}, [4001]) is None
