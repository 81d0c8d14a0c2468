"""Child processes of ``ollamaflow up``: started with their output prefixed, awaited until they answer,
watched while they run and stopped in stages (SIGTERM, then SIGKILL after a timeout)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TextIO

import httpx

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
    """One started process: what it is, its handle and the thread copying its output."""

    name: str
    stage: int
    proc: subprocess.Popen[bytes]
    pump: threading.Thread | None = None
    expected_exit: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def join_output(self) -> None:
        """Wait until everything the child wrote has been printed (its pipe reached EOF)."""
        if self.pump is not None:
            self.pump.join(timeout=5)


class Supervisor:
    """Owns every child it starts until ``stop_all``; ``stop`` is set by the signal handlers."""

    def __init__(self, printer: LinePrinter, stop: threading.Event, *, stop_timeout: float = 10.0) -> None:
        self._printer = printer
        self._stop = stop
        self._stop_timeout = stop_timeout
        self._children: list[Child] = []

    @property
    def children(self) -> Sequence[Child]:
        return tuple(self._children)

    @property
    def any_running(self) -> bool:
        return any(child.proc.poll() is None for child in self._children)

    def start(self, name: str, argv: list[str], env: dict[str, str], *, stage: int) -> Child:
        """Start ``argv``; children of a higher stage are stopped before those of a lower one."""
        proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Not in our process group: Ctrl-C reaches only us, and we stop the children in order.
            start_new_session=True,
            preexec_fn=parent_death_signal(signal.SIGTERM),
        )
        child = Child(name=name, stage=stage, proc=proc)
        child.pump = threading.Thread(target=self._pump, args=(child,), name=f"log-{name}", daemon=True)
        child.pump.start()
        self._children.append(child)
        return child

    def _pump(self, child: Child) -> None:
        assert child.proc.stdout is not None
        for raw in child.proc.stdout:
            self._printer.line(child.name, raw.decode(errors="replace").rstrip())

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

    def first_dead(self) -> Child | None:
        """A child that was meant to keep running but has exited."""
        for child in self._children:
            if not child.expected_exit and child.proc.poll() is not None:
                child.join_output()
                return child
        return None

    def stop_all(self) -> None:
        """SIGTERM each stage, highest first, all of a stage at once; SIGKILL what outlives the timeout."""
        for stage in sorted({c.stage for c in self._children}, reverse=True):
            group = [c for c in self._children if c.stage == stage and c.proc.poll() is None]
            for child in group:
                child.expected_exit = True
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + self._stop_timeout
            for child in group:
                try:
                    child.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.proc.kill()
                    child.proc.wait()
                    self._printer.line(
                        "up", f"{child.name} still ran {self._stop_timeout:g} s after SIGTERM; killed"
                    )
        for child in self._children:
            child.join_output()
