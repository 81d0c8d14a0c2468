"""``ollamaflow up --demo`` never goes down because one part died: each part is killed with SIGKILL
in turn, and comes back on its own port while the rest keeps serving. One cluster serves every test of
this module (in file order); a crash loop, which ends the run, gets one of its own."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ollamaflow.processes import free_port, process_is_live
from tests.up.harness import UpProcess, child_pid, start_up

pytestmark = pytest.mark.slow

READY = r"^up\s+\| ready: "
GENERATE = {"model": "llama3.2", "prompt": "hi", "stream": False}


@dataclass
class Cluster:
    up: UpProcess
    dataplane: str
    controlplane: str
    token: str
    sim_ports: list[int]
    data_dir: Path

    def admin(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"}
        return httpx.Client(base_url=self.controlplane, headers=headers, timeout=10)

    def generate(self, host: str | None = None) -> httpx.Response:
        headers = {"Host": host} if host else {}
        return httpx.post(self.dataplane + "/api/generate", json=GENERATE, headers=headers, timeout=30)

    def pid(self, *words: str) -> int:
        pid = child_pid(self.up.proc.pid, *words)
        assert pid is not None, f"no child of up with {words}:\n{self.up.output[-3000:]}"
        return pid


def _eventually(check: Callable[[], bool], what: str, up: UpProcess, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if check():
                return
        assert up.proc.poll() is None, f"up exited with {up.proc.returncode}:\n{up.output[-6000:]}"
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen in {within:.0f} s:\n{up.output[-6000:]}")


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while process_is_live(pid) and time.monotonic() < deadline:
        time.sleep(0.02)


def _up_args(data_dir: Path, port: int, cp_port: int, *extra: str) -> list[str]:
    return ["--data-dir", str(data_dir), "--port", str(port), "--controlplane-port", str(cp_port), *extra]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("resilience")
    port, cp_port = free_port(), free_port()
    up = start_up(_up_args(tmp / "data", port, cp_port, "--demo"), tmp / "up.log")
    try:
        up.wait_for(READY)
        token = up.wait_for(r"^up\s+\| admin token:\s+(\S+)").group(1)
        ports = up.wait_for(r"demo: backends on simulators at ports ([\d, ]+),").group(1)
        yield Cluster(
            up=up,
            dataplane=f"http://127.0.0.1:{port}",
            controlplane=f"http://127.0.0.1:{cp_port}",
            token=token,
            sim_ports=[int(p) for p in ports.split(",")],
            data_dir=tmp / "data",
        )
        assert up.terminate() == 0, up.output[-4000:]
        assert "Traceback" not in (tmp / "data" / "logs" / "controlplane.log").read_text()
    finally:
        if up.proc.poll() is None:
            up.proc.kill()


def test_logs_are_written_per_child_and_their_paths_printed(cluster: Cluster) -> None:
    logs = cluster.data_dir / "logs"
    for name in ("controlplane", "dataplane-1", "sim-1", "sim-2", "sim-3"):
        assert re.search(rf"^up\s+\| log:\s+{re.escape(str(logs / name))}\.log", cluster.up.output, re.M)
        assert (logs / f"{name}.log").exists()
    assert f"log:           {cluster.data_dir / 'nats' / 'nats.log'}" in cluster.up.output
    assert f"log:           {cluster.data_dir / 'postgres.log'}" in cluster.up.output
    assert "Uvicorn running" in (logs / "dataplane-1.log").read_text()


def test_a_killed_simulator_is_routed_around_and_comes_back_on_its_port(cluster: Cluster) -> None:
    sim_port = cluster.sim_ports[0]
    before = cluster.pid("sim", str(sim_port))
    _kill(before)
    # The demo frontend has three simulators: the data plane fails over and then routes around it.
    for _ in range(9):
        response = cluster.generate()
        assert response.status_code == 200, response.text
        assert response.headers["x-ollamaflow-backend"] in ("demo-sim-2", "demo-sim-3")
    cluster.up.wait_for(r"^up\s+\| sim-1 exited with code -9; restarting in 5\.0 s \(restart 1\)$")
    _eventually(
        lambda: httpx.get(f"http://127.0.0.1:{sim_port}/api/version").status_code == 200,
        "sim-1 answering on its port again",
        cluster.up,
    )
    assert cluster.pid("sim", str(sim_port)) != before
    _eventually(
        lambda: cluster.generate().headers.get("x-ollamaflow-backend") == "demo-sim-1",
        "demo-sim-1 serving again",
        cluster.up,
    )
    assert "stopping everything" not in cluster.up.output


def test_a_killed_data_plane_is_restarted_on_the_same_port(cluster: Cluster) -> None:
    port = cluster.dataplane.rsplit(":", 1)[1]
    before = cluster.pid("dataplane", port)
    _kill(before)
    cluster.up.wait_for(r"^up\s+\| dataplane-1 exited with code -9; restarting in \d+\.\d s \(restart 1\)$")
    _eventually(lambda: cluster.generate().status_code == 200, "the data plane answering", cluster.up)
    assert cluster.pid("dataplane", port) != before


def test_a_killed_nats_comes_back_on_its_port_and_changes_reach_the_data_plane(cluster: Cluster) -> None:
    before = cluster.pid("nats-server")
    nats_port = re.search(r"^up\s+\| nats:\s+nats://127\.0\.0\.1:(\d+)", cluster.up.output, re.M)
    assert nats_port is not None
    _kill(before)
    # Meanwhile the data plane serves on its last snapshot.
    for _ in range(3):
        assert cluster.generate().status_code == 200
    cluster.up.wait_for(r"^up\s+\| nats exited with code -9; restarting in \d+\.\d s \(restart 1\)$")
    _eventually(
        lambda: child_pid(cluster.up.proc.pid, "nats-server", nats_port.group(1)) is not None,
        "nats-server running again on its port",
        cluster.up,
    )
    with cluster.admin() as admin:
        ready = cluster.controlplane + "/readyz"
        _eventually(lambda: httpx.get(ready).status_code == 200, "the control plane ready", cluster.up)
        created = admin.put(
            "/v1.0/frontends",
            json={"Identifier": "after-nats", "Hostname": "after-nats.example", "Backends": ["demo-sim-3"]},
        )
        assert created.status_code == 201, created.text

        def routed() -> bool:
            return all(
                cluster.generate("after-nats.example").headers.get("x-ollamaflow-backend") == "demo-sim-3"
                for _ in range(3)
            )

        _eventually(routed, "the new frontend reaching the data plane", cluster.up, within=30)


def test_a_killed_control_plane_is_restarted_and_the_admin_api_answers(cluster: Cluster) -> None:
    before = cluster.pid("controlplane")
    _kill(before)
    assert cluster.generate().status_code == 200
    cluster.up.wait_for(r"^up\s+\| controlplane exited with code -9; restarting in \d+\.\d s \(restart 1\)$")
    with cluster.admin() as admin:
        _eventually(lambda: admin.get("/v1.0/frontends").status_code == 200, "the admin API", cluster.up)
    assert cluster.pid("controlplane") != before


def test_a_killed_postgres_comes_back_and_keeps_the_configuration(cluster: Cluster) -> None:
    before = cluster.pid("postgres", "-D")
    _kill(before)
    assert cluster.generate().status_code == 200
    cluster.up.wait_for(r"^up\s+\| postgres exited with code -9; restarting in \d+\.\d s \(restart 1\)$")
    with cluster.admin() as admin:

        def written() -> bool:
            body = {"Identifier": "after-postgres", "Hostname": "pg.example", "Backends": ["demo-sim-2"]}
            return admin.put("/v1.0/frontends", json=body).status_code == 201

        _eventually(written, "a configuration write", cluster.up)
        assert admin.get("/v1.0/frontends/after-nats").status_code == 200
    assert "stopping everything" not in cluster.up.output


def _hold(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def test_a_crash_loop_stops_the_cluster_with_the_log_tail(tmp_path: Path) -> None:
    port, cp_port = free_port(), free_port()
    up = start_up(_up_args(tmp_path / "data", port, cp_port), tmp_path / "up.log")
    holder: socket.socket | None = None
    try:
        up.wait_for(READY)
        # The data plane dies and its port is taken: every restart fails at once.
        deadline = time.monotonic() + 30
        while holder is None:
            assert time.monotonic() < deadline, up.output[-4000:]
            pid = child_pid(up.proc.pid, "dataplane", str(port))
            if pid is not None:
                _kill(pid)
            with contextlib.suppress(OSError):
                holder = _hold(port)
        assert up.proc.wait(timeout=90) == 1, up.output[-4000:]
    finally:
        if holder is not None:
            holder.close()
        if up.proc.poll() is None:
            up.proc.kill()
    output = up.output
    assert re.search(
        r"^up\s+\| error: dataplane-1 exited with code \d+; it exited again after 5 restarts within 60 s "
        r"\(the limit is 5\); stopping everything$",
        output,
        re.M,
    ), output[-4000:]
    tail = output[output.index(f"last lines of {tmp_path / 'data' / 'logs' / 'dataplane-1.log'}:") :]
    assert "address already in use" in tail
    for count in range(1, 6):
        assert f"(restart {count})" in output
    assert "up           | stopped" in output
