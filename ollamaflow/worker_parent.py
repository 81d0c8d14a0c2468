"""``ollamaflow dataplane --workers N``: N data-plane processes serving one port, and their parent.

The parent binds the port N times with SO_REUSEPORT, one listening socket per worker, keeps them all
and hands socket K to worker K (inherited; uvicorn serves a socket it is given, as in the tests):

- Linux spreads new connections over the sockets by a hash of their addresses, so the workers share
  even a burst of connections. One socket shared by all would not: whichever worker wakes first
  accepts everything queued (uvloop accepts until the queue is empty), measured as 96 of 96 requests
  of 16 new clients on one worker.
- A worker that dies leaves its socket open in the parent: the connections queued on it, and the new
  ones hashed to it, wait for the restarted worker instead of being reset (Linux resets what is queued
  on a listening socket that closes).
- The port is checked once, by the parent, and port 0 works (the first bind picks the port).

Each worker follows the snapshot and reports on its own, as the data plane ``<id>-w<K>``
(``ollamaflow.worker_plan``), so the control plane splits each backend's limits among the workers
like among any data planes. The parent restarts a worker that dies after the backoff of
``ollamaflow.restarts`` (a crash loop ends the whole data plane, exit 1); SIGTERM or SIGINT go on to
every worker as SIGTERM, each drains (``dataplane.drain``), and the parent exits 0 once all exited 0.
A second signal goes on too: the workers stop at once. Workers run in sessions of their own, so a
Ctrl-C at a terminal reaches only the parent (and each worker one signal, not two).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from dataplane.settings import DataPlaneSettings
from ollamaflow.processes import parent_death_signal
from ollamaflow.restarts import PART_POLICY, GiveUp, RestartPolicy, RestartTracker
from ollamaflow.worker_plan import metrics_ports_problem, worker_id, worker_metrics_port
from shared.errors import ConfigError

__all__ = ["STOP_MARGIN", "listen", "run_workers"]

log = logging.getLogger("ollamaflow.dataplane")

CLI = [sys.executable, "-m", "ollamaflow.cli"]
# After the drain timeout: how long the workers get to end what is left and close, before SIGKILL.
STOP_MARGIN = 10.0
_TICK = 0.05
_BACKLOG = 4096  # as a single data plane's (dataplane.server)


@dataclass
class _Worker:
    index: int
    id: str
    sock: socket.socket  # its listening socket, kept here while it restarts
    argv: list[str]
    env: dict[str, str]
    tracker: RestartTracker
    proc: subprocess.Popen[bytes] | None = None
    due: float | None = None  # when to start it again (it died)
    stop_code: int | None = None  # how it exited once told to stop


def listen(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` listening sockets on one port (SO_REUSEPORT), one per worker; ConfigError when the
    port cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_server((host, port), family=family, backlog=_BACKLOG, reuse_port=True)
            sockets.append(sock)
            port = int(sock.getsockname()[1])  # port 0: the others join the port the first one got
            sock.set_inheritable(True)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sockets


def run_workers(
    settings: DataPlaneSettings,
    workers: int,
    config_file: Path | None = None,
    *,
    policy: RestartPolicy = PART_POLICY,
) -> int:
    """Serve ``settings`` (loaded, with its id) with ``workers`` processes until SIGTERM/SIGINT (0 once
    every worker stopped cleanly) or a worker's crash loop (1). Call from the main thread."""
    problem = metrics_ports_problem(settings.dataplane_metrics_port, workers, settings.dataplane_port)
    if problem is not None:
        raise ConfigError(problem)
    sockets = listen(settings.dataplane_host, settings.dataplane_port, workers)
    port = int(sockets[0].getsockname()[1])
    signals: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        signals.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        pool = [
            _worker(settings, config_file, sock, port, index, policy) for index, sock in enumerate(sockets)
        ]
        log.info(
            "data plane %s: %d workers on %s:%d (ids %s to %s)",
            settings.dataplane_id,
            workers,
            settings.dataplane_host,
            port,
            pool[0].id,
            pool[-1].id,
        )
        for worker in pool:
            _start(worker)
        code = _supervise(pool, signals, settings.drain_timeout)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sock in sockets:
            sock.close()
    log.info("data plane %s: all workers stopped", settings.dataplane_id)
    return code


def _worker(
    settings: DataPlaneSettings,
    config_file: Path | None,
    sock: socket.socket,
    port: int,
    index: int,
    policy: RestartPolicy,
) -> _Worker:
    ident = worker_id(settings.dataplane_id, index)
    argv = [*CLI, "dataplane", "--host", settings.dataplane_host, "--port", str(port), "--id", ident]
    argv += ["--listen-fd", str(sock.fileno())]
    if config_file is not None:
        argv += ["--config", str(config_file)]
    env = dict(os.environ)
    metrics_port = worker_metrics_port(settings.dataplane_metrics_port, index)
    if metrics_port:
        env["OLLAMAFLOW_DATAPLANE_METRICS_PORT"] = str(metrics_port)
    tracker = RestartTracker(policy, started_at=time.monotonic())
    return _Worker(index, ident, sock, argv, env, tracker)


def _start(worker: _Worker) -> None:
    worker.proc = subprocess.Popen(
        worker.argv,
        env=worker.env,
        stdin=subprocess.DEVNULL,
        pass_fds=(worker.sock.fileno(),),
        # Not in our process group: a terminal's Ctrl-C reaches us only, and we pass it on once.
        start_new_session=True,
        preexec_fn=parent_death_signal(signal.SIGTERM),
    )
    worker.due = None
    log.info("worker %s started (pid %d)", worker.id, worker.proc.pid)


def _supervise(pool: list[_Worker], signals: list[int], drain_timeout: float) -> int:
    """Restart workers that die until a signal (then stop them all) or a crash loop."""
    forwarded = 0
    deadline: float | None = None
    gave_up = False
    while True:
        now = time.monotonic()
        if len(signals) > forwarded:
            if forwarded == 0:
                log.info("stopping: each worker drains (up to %g s)", drain_timeout)
                _close_sockets(pool)  # the workers' copies close as they drain: then the port is free
                deadline = now + drain_timeout + STOP_MARGIN
            forwarded = len(signals)
            _signal_all(pool, signal.SIGTERM)
        stopping = forwarded > 0 or gave_up
        for worker in pool:
            proc = worker.proc
            if proc is None or proc.poll() is None:
                continue
            worker.proc = None
            if stopping:
                worker.stop_code = proc.returncode
                continue
            decision = worker.tracker.exited(now)
            if isinstance(decision, GiveUp):
                code, reason = proc.returncode, decision.reason
                log.error("worker %s exited with code %d; %s: stopping", worker.id, code, reason)
                gave_up = True
                _close_sockets(pool)
                deadline = now + drain_timeout + STOP_MARGIN
                _signal_all(pool, signal.SIGTERM)
                break
            worker.due = now + decision.delay
            log.warning(
                "worker %s exited with code %d; starting it again in %g s (restart %d)",
                worker.id,
                proc.returncode,
                decision.delay,
                decision.count,
            )
        if stopping or gave_up:
            if all(worker.proc is None for worker in pool):
                return 1 if gave_up else _exit_code(pool)
            if deadline is not None and now > deadline:
                log.error("workers still ran %g s after SIGTERM; killing them", drain_timeout + STOP_MARGIN)
                _signal_all(pool, signal.SIGKILL)
                deadline = None
        else:
            for worker in pool:
                if worker.proc is None and worker.due is not None and now >= worker.due:
                    _start(worker)
                    worker.tracker.restarted(now)
        time.sleep(_TICK)


def _close_sockets(pool: list[_Worker]) -> None:
    for worker in pool:
        worker.sock.close()


def _signal_all(pool: list[_Worker], sig: int) -> None:
    for worker in pool:
        if worker.proc is not None and worker.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                worker.proc.send_signal(sig)


def _exit_code(pool: list[_Worker]) -> int:
    """0 when every worker that was running when told to stop exited cleanly."""
    return 0 if all(worker.stop_code in (None, 0) for worker in pool) else 1
