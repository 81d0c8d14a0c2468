"""The clusters the fault matrix breaks, with each part a process of its own that a test can SIGKILL.

- ``Processes``: NATS and PostgreSQL (the embedded servers, each a child process of the test), a
  control plane, two data planes and two simulators started with ``ollamaflow <command>``; killed
  parts are started again by the test, on the same port and data. Intervals are short (probes every
  0.5 s, reports every 0.5 s, a data plane counted live for 3 s) so that each case stays short.
- ``UpCluster``: ``ollamaflow up --demo --dataplanes 2`` as users run it, with its defaults; a killed
  part is started again by ``up`` itself.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from ollamaflow.embedded import EmbeddedNats, EmbeddedPostgres, EmbeddedServerError
from ollamaflow.embedded.child import ChildServer
from tests.faults.harness import GENERATE, eventually
from tests.support.processes import CLI, free_port, stop, wait_ready
from tests.support.secrets import secrets_env
from tests.support.signing import write_test_keys
from tests.up.harness import UpProcess, child_pid, free_port_pair, start_up

__all__ = [
    "Part",
    "Processes",
    "UpCluster",
    "add_backend",
    "add_frontend",
    "kill_server",
    "restart_server",
    "room_for_streams",
    "routes_to",
    "running_processes",
    "running_up",
    "slow_down",
]

TOKEN = secrets.token_urlsafe(24)
SIM_ARGS = ["--tokens-per-second", "40", "--answer-tokens", "12"]
SIM_READY = "/_sim/config"  # the simulator's own route: in either API format, and left out of its stats


@dataclass
class Part:
    """``ollamaflow <args>`` as a child process that the test may SIGKILL and start again alike.

    ``prefix`` runs it under another command (``ip netns exec NAME``); its output is appended to
    ``log`` across restarts; it is ready when ``ready`` answers 200.
    """

    name: str
    args: list[str]
    env: dict[str, str]
    log: Path
    ready: str
    prefix: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def origin(self) -> str:
        """``http://host:port`` of ``ready``."""
        parts = urlsplit(self.ready)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def port(self) -> int:
        return int(urlsplit(self.ready).port or 0)

    def launch(self) -> float:
        """Start it without waiting; the time.monotonic() it was started."""
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*self.prefix, *CLI, *self.args],
                env={**os.environ, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return time.monotonic()

    def wait_ready(self, timeout: float = 60.0) -> None:
        assert self.proc is not None
        wait_ready(self.ready, self.proc, self.log, timeout)

    def start(self, timeout: float = 60.0) -> float:
        started = self.launch()
        self.wait_ready(timeout)
        return started

    @property
    def pid(self) -> int:
        assert self.proc is not None and self.proc.poll() is None, f"{self.name} is not running"
        return self.proc.pid

    def kill(self) -> float:
        """SIGKILL, as a crash; the time.monotonic() it was sent."""
        pid = self.pid
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        assert self.proc is not None
        self.proc.wait(timeout=10)
        return killed

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)


def kill_server(server: ChildServer, *, group: bool = False) -> float:
    """SIGKILL an embedded server (``group``: with every process it forked, as when its machine or
    container dies); the time.monotonic() it was sent."""
    pid = server.pid
    assert pid is not None and server.running, f"embedded {server.name} is not running"
    if group:
        os.killpg(pid, signal.SIGKILL)  # it runs in a session, hence a process group, of its own
    else:
        os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    deadline = killed + 10
    while server.running:
        assert time.monotonic() < deadline, f"embedded {server.name} survived SIGKILL"
        time.sleep(0.02)
    return killed


def restart_server(server: ChildServer, within: float = 30.0) -> float:
    """Start a killed embedded server again on its port and data; the time.monotonic() it was started.

    A start can fail while what the dead one held is being released (PostgreSQL's shared memory, a
    port): it is tried again until ``within`` seconds have passed."""
    deadline = time.monotonic() + within
    started = time.monotonic()
    while True:
        server.stop()  # reaps the dead process and closes its log
        try:
            server.start()
            return started
        except EmbeddedServerError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def add_backend(admin: httpx.Client, sim: Part, api_format: str = "Ollama") -> None:
    """The simulator ``sim`` as a backend of the same name."""
    body = {"Identifier": sim.name, "Hostname": urlsplit(sim.ready).hostname, "Port": sim.port}
    if api_format == "OpenAI":  # such a server need not answer "/"
        body |= {"ApiFormat": "OpenAI", "HealthCheckUrl": "/v1/models"}
    response = admin.put("/v1.0/backends", json=body)
    assert response.status_code == 201, response.text


def add_frontend(admin: httpx.Client, identifier: str, hostname: str, backends: list[str]) -> None:
    body = {
        "Identifier": identifier,
        "Hostname": hostname,
        "Backends": backends,
        "LoadBalancing": "RoundRobin",
    }
    response = admin.put("/v1.0/frontends", json=body)
    assert response.status_code == 201, response.text


def routes_to(url: str, host: str, backend: str) -> bool:
    """Does the data plane at ``url`` answer a request for ``host`` from ``backend``?"""
    response = httpx.post(url + "/api/generate", json=GENERATE, headers={"Host": host}, timeout=10)
    return response.status_code == 200 and response.headers.get("x-ollamaflow-backend") == backend


def room_for_streams(admin: httpx.Client, backend: str) -> None:
    """Let ``backend`` take many requests at once: the streams a case cuts must all run together,
    not wait in a queue for one of a few slots (split among the data planes). New backends have no
    limit (0), but the limit is set here so that a case does not depend on that default."""
    response = admin.patch(f"/v1.0/backends/{backend}", json={"MaxParallelRequests": 64})
    assert response.status_code == 200, response.text


def slow_down(sim_url: str, tokens_per_second: float) -> None:
    """Pace a simulator's answers (its own control route), so that a stream lasts long enough to be cut."""
    response = httpx.post(sim_url + "/_sim/config", json={"tokens_per_second": tokens_per_second}, timeout=5)
    assert response.status_code == 200, response.text


@dataclass
class Processes:
    tmp: Path
    nats: EmbeddedNats
    postgres: EmbeddedPostgres
    controlplane: Part
    dataplanes: list[Part]
    sims: list[Part]
    dataplane_env: dict[str, str]

    def admin(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.controlplane.origin, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
        )

    def dataplane_url(self, index: int) -> str:
        return self.dataplanes[index].origin

    def sim_url(self, index: int) -> str:
        return self.sims[index].origin

    def sim(self, name: str, host: str, api_format: str = "ollama") -> Part:
        """One more simulator (not started), listening on ``host``."""
        port = free_port()
        args = ["sim", "--host", host, "--port", str(port), "--format", api_format, *SIM_ARGS]
        return Part(name, args, {}, self.tmp / f"{name}.log", f"http://{host}:{port}{SIM_READY}")

    def controlplane_replica(self, name: str) -> Part:
        """One more control plane (not started) on the same database and bus, with id ``name``."""
        port = free_port()
        env = {**self.controlplane.env, "OLLAMAFLOW_CONTROLPLANE_ID": name}
        args = ["controlplane", "--port", str(port)]
        return Part(name, args, env, self.tmp / f"{name}.log", f"http://127.0.0.1:{port}/readyz")

    def dataplane(self, name: str, *, host: str, port: int, nats_url: str, prefix: list[str]) -> Part:
        """One more data plane (not started), listening on ``host`` (e.g. in another network namespace)."""
        env = {
            **self.dataplane_env,
            "OLLAMAFLOW_NATS_URL": nats_url,
            "OLLAMAFLOW_SNAPSHOT_CACHE": str(self.tmp / f"{name}.snapshot"),
        }
        args = ["dataplane", "--host", host, "--port", str(port), "--id", name]
        return Part(name, args, env, self.tmp / f"{name}.log", f"http://{host}:{port}/readyz", prefix)


@contextmanager
def running_processes(tmp: Path) -> Iterator[Processes]:
    """NATS, PostgreSQL, two simulators, a control plane and two data planes, configured through the
    admin API with a catch-all frontend ``main`` over backends ``sim0`` and ``sim1`` (round robin)."""
    with ExitStack() as stack:
        # On every address: a data plane in another network namespace must reach it (case 6).
        nats = EmbeddedNats(tmp / "nats", host="0.0.0.0")
        nats_url = nats.start()
        stack.callback(nats.stop)
        postgres = EmbeddedPostgres(tmp / "pgdata")  # durable, as ``up`` runs it
        database_url = postgres.start()
        stack.callback(postgres.stop)
        namespace = "faults" + uuid.uuid4().hex[:8]
        common = {"OLLAMAFLOW_NATS_URL": nats_url, "OLLAMAFLOW_BUS_NAMESPACE": namespace, **secrets_env()}
        common |= write_test_keys(tmp / "keys").env()
        cp_port = free_port()
        cp_env = {
            **common,
            "OLLAMAFLOW_DATABASE_URL": database_url,
            "OLLAMAFLOW_ADMIN_TOKENS": TOKEN,
            "OLLAMAFLOW_HEALTH_INTERVAL": "0.5",
            "OLLAMAFLOW_HEALTH_TIMEOUT": "0.5",
            "OLLAMAFLOW_DATAPLANE_TTL": "3",
        }
        dp_env = {**common, "OLLAMAFLOW_REPORT_INTERVAL": "0.5", "OLLAMAFLOW_EJECT_COOLDOWN": "1"}
        cluster = Processes(
            tmp=tmp,
            nats=nats,
            postgres=postgres,
            controlplane=Part(
                "controlplane",
                ["controlplane", "--port", str(cp_port)],
                cp_env,
                tmp / "controlplane.log",
                f"http://127.0.0.1:{cp_port}/readyz",
            ),
            dataplanes=[],
            sims=[],
            dataplane_env=dp_env,
        )
        cluster.sims = [cluster.sim(f"sim{i}", "127.0.0.1") for i in range(2)]
        for i in range(2):
            port = free_port()
            cluster.dataplanes.append(
                cluster.dataplane(f"dp{i}", host="127.0.0.1", port=port, nats_url=nats_url, prefix=[])
            )
        parts = [*cluster.sims, cluster.controlplane, *cluster.dataplanes]
        for part in parts:
            stack.callback(part.stop)
            part.launch()
        cluster.controlplane.wait_ready()
        for part in cluster.sims:
            part.wait_ready()
        with cluster.admin() as admin:
            for sim in cluster.sims:
                add_backend(admin, sim)
            add_frontend(admin, "main", "*", ["sim0", "sim1"])
        for index, part in enumerate(cluster.dataplanes):
            part.wait_ready()
            url = cluster.dataplane_url(index)
            for backend in ("sim0", "sim1"):
                eventually(
                    lambda u=url, b=backend: routes_to(u, "any.example", b), f"{part.name} using {backend}"
                )
        yield cluster


@dataclass
class UpCluster:
    up: UpProcess
    dataplanes: list[str]
    controlplane: str
    token: str
    sim_ports: list[int]

    def admin(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"}
        return httpx.Client(base_url=self.controlplane, headers=headers, timeout=10)

    def pid(self, *words: str) -> int:
        pid = child_pid(self.up.proc.pid, *words)
        assert pid is not None, f"no child of up with {words}:\n{self.up.output[-3000:]}"
        return pid

    def running(self, *words: str) -> bool:
        return child_pid(self.up.proc.pid, *words) is not None

    def kill(self, *words: str) -> float:
        """SIGKILL the child of ``up`` whose command line holds ``words``; when it was sent."""
        os.kill(self.pid(*words), signal.SIGKILL)
        return time.monotonic()

    def kill_group(self, *words: str) -> float:
        """SIGKILL that child's whole process group (an embedded server runs in a session of its own)."""
        os.killpg(self.pid(*words), signal.SIGKILL)
        return time.monotonic()

    def assert_alive(self) -> None:
        assert self.up.proc.poll() is None, (
            f"up exited with {self.up.proc.returncode}:\n{self.up.output[-6000:]}"
        )
        assert "stopping everything" not in self.up.output, self.up.output[-6000:]


@contextmanager
def running_up(tmp: Path) -> Iterator[UpCluster]:
    """``ollamaflow up --demo --dataplanes 2`` on free ports, stopped with SIGTERM afterwards."""
    port = free_port_pair()
    cp_port = free_port()
    while cp_port in (port, port + 1):
        cp_port = free_port()
    args = ["--data-dir", str(tmp / "data"), "--port", str(port), "--controlplane-port", str(cp_port)]
    up = start_up([*args, "--demo", "--dataplanes", "2"], tmp / "up.log")
    try:
        up.wait_for(r"^up\s+\| ready: ")
        ports = up.wait_for(r"demo: backends on simulators at ports ([\d, ]+),").group(1)
        yield UpCluster(
            up=up,
            dataplanes=[f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"],
            controlplane=f"http://127.0.0.1:{cp_port}",
            token=up.wait_for(r"^up\s+\| admin token:\s+(\S+)").group(1),
            sim_ports=[int(p) for p in re.split(r",\s*", ports)],
        )
        assert up.terminate() == 0, up.output[-4000:]
    finally:
        if up.proc.poll() is None:
            up.proc.kill()
            up.proc.wait()
