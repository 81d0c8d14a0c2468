"""Child processes of ``ollamaflow up``: started with their output prefixed (and copied to a log file per
child), awaited until they answer, started again with the same command when they die, and stopped in
stages (SIGTERM, then SIGKILL after a timeout)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import httpx

from ollamaflow.childlogs import ChildLog
from ollamaflow.processes import parent_death_signal

__all__ = ["Child", "LinePrinter", "StartupError", "StopRequested", "Supervisor"]


class StartupError(Exception):
    """Something needed at start-up did not come up; the message says what and why."""


class StopRequested(Exception):
    """Ctrl-C or SIGTERM arrived while we were still starting."""


class LinePrinter:
    """Whole lines to one stream from many threads, each with a fixed-width source prefix."""

    def __init__(self, out: TextIO, width: int = 13) -> None:
        self._out = out
        self._width = width
        self._lock = threading.Lock()

    def line(self, source: str, text: str) -> None:
        with self._lock:
            self._out.write(f"{source:<{self._width}}| {text}\n")
            self._out.flush()


@dataclass
class Child:
    """One started process: what it is, how to start it again, its handle, the thread copying its output
    and the file that output also goes to."""

    name: str
    stage: int
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes]
    log: ChildLog | None = None
    pump: threading.Thread | None = None
    expected_exit: bool = False
    stop_timeout: float | None = None  # how long it may take to stop after SIGTERM; None: the default

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def log_path(self) -> Path | None:
        return self.log.path if self.log is not None else None

    def exit_code(self) -> int | None:
        """None while it runs, or was meant to exit; its exit code once it died."""
        code = self.proc.poll()
        return None if code is None or self.expected_exit else code

    def join_output(self) -> None:
        """Wait until everything the child wrote has been printed (its pipe reached EOF)."""
        if self.pump is not None:
            self.pump.join(timeout=5)


class Supervisor:
    """Owns every child it starts until ``stop_all``; ``stop`` is set by the signal handlers."""

    def __init__(
        self,
        printer: LinePrinter,
        stop: threading.Event,
        *,
        stop_timeout: float = 10.0,
        log_dir: Path | None = None,
    ) -> None:
        self._printer = printer
        self._stop = stop
        self._stop_timeout = stop_timeout
        self._log_dir = log_dir
        self._children: list[Child] = []

    @property
    def children(self) -> Sequence[Child]:
        return tuple(self._children)

    @property
    def any_running(self) -> bool:
        return any(child.proc.poll() is None for child in self._children)

    def start(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        *,
        stage: int,
        stop_timeout: float | None = None,
    ) -> Child:
        """Start ``argv``; children of a higher stage are stopped before those of a lower one, each
        given ``stop_timeout`` (default: the supervisor's) after SIGTERM before SIGKILL."""
        log = ChildLog(self._log_dir / f"{name}.log") if self._log_dir is not None else None
        proc = self._spawn(argv, env)
        child = Child(name, stage, argv, env, proc, log=log, stop_timeout=stop_timeout)
        self._children.append(child)
        self._follow(child)
        return child

    def respawn(self, child: Child) -> None:
        """Start a child that died again, with the same command and environment (so the same port)."""
        if child.proc.poll() is None:
            raise RuntimeError(f"{child.name} still runs")
        child.join_output()
        child.proc = self._spawn(child.argv, child.env)
        child.expected_exit = False
        self._follow(child)

    def _spawn(self, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Not in our process group: Ctrl-C reaches only us, and we stop the children in order.
            start_new_session=True,
            preexec_fn=parent_death_signal(signal.SIGTERM),
        )

    def _follow(self, child: Child) -> None:
        if child.log is not None:
            started = datetime.now(UTC).isoformat(timespec="seconds")
            child.log.write(f"---- ollamaflow up: {child.name} started (pid {child.pid}) at {started} ----")
        child.pump = threading.Thread(
            target=self._pump, args=(child, child.proc), name=f"log-{child.name}", daemon=True
        )
        child.pump.start()

    def _pump(self, child: Child, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            self._printer.line(child.name, line)
            if child.log is not None:
                child.log.write(line)
        proc.stdout.close()

    def wait_ready(
        self,
        child: Child,
        url: str,
        *,
        timeout: float,
        accept: Callable[[httpx.Response], bool] | None = None,
    ) -> None:
        """Poll ``url`` until it answers 200 (and ``accept`` likes the answer); the child dying, a stop
        request or the timeout end the wait."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        with httpx.Client(timeout=2.0) as client:
            while True:
                self._check_alive(child)
                try:
                    response = client.get(url)
                except httpx.HTTPError as exc:
                    last = type(exc).__name__
                else:
                    if response.status_code == 200 and (accept is None or accept(response)):
                        return
                    last = f"HTTP {response.status_code} {response.text[:200]}"
                if time.monotonic() > deadline:
                    raise StartupError(
                        f"{child.name} did not become ready at {url} in {timeout:.0f} s ({last})"
                    )
                if self._stop.wait(0.1):
                    raise StopRequested

    def wait_exit(self, child: Child, *, timeout: float) -> int:
        """Wait for a one-shot child (such as ``migrate``) to finish; its exit code."""
        child.expected_exit = True
        deadline = time.monotonic() + timeout
        while child.proc.poll() is None:
            if time.monotonic() > deadline:
                raise StartupError(f"{child.name} did not finish in {timeout:.0f} s")
            if self._stop.wait(0.1):
                raise StopRequested
        child.join_output()
        return int(child.proc.returncode)

    def _check_alive(self, child: Child) -> None:
        if child.proc.poll() is not None:
            child.join_output()
            raise StartupError(f"{child.name} exited with code {child.proc.returncode} while starting")

    def stop_all(self) -> None:
        """SIGTERM each stage, highest first, all of a stage at once; SIGKILL what outlives its timeout."""
        for stage in sorted({c.stage for c in self._children}, reverse=True):
            group = [c for c in self._children if c.stage == stage and c.proc.poll() is None]
            for child in group:
                child.expected_exit = True
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(signal.SIGTERM)
            started = time.monotonic()
            for child in group:
                timeout = self._stop_timeout if child.stop_timeout is None else child.stop_timeout
                try:
                    child.proc.wait(timeout=max(0.0, started + timeout - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.proc.kill()
                    child.proc.wait()
                    self._printer.line("up", f"{child.name} still ran {timeout:g} s after SIGTERM; killed")
        for child in self._children:
            child.join_output()
            if child.log is not None:
                child.log.close()
