"""Run ``ollamaflow up`` as a real subprocess and read what it prints."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ollamaflow.processes import free_port, port_is_free, process_command_line, process_is_live

__all__ = ["UpProcess", "child_pid", "descendants", "free_port_pair", "start_up"]


@dataclass
class UpProcess:
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 150.0) -> re.Match[str]:
        """The first match of ``pattern`` in the output; fails with the output if ``up`` exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.output, re.MULTILINE)
            if match:
                return match
            if self.proc.poll() is not None:
                raise AssertionError(f"up exited with {self.proc.returncode}:\n{self.output[-6000:]}")
            time.sleep(0.2)
        raise AssertionError(f"{pattern!r} not printed in {timeout:.0f} s:\n{self.output[-6000:]}")

    def terminate(self, timeout: float = 60.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"up did not stop on SIGTERM:\n{self.output[-6000:]}") from None


def start_up(args: list[str], log: Path, env: dict[str, str] | None = None) -> UpProcess:
    """``ollamaflow up <args>`` with OLLAMAFLOW_* of the test environment left out unless given."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("OLLAMAFLOW_")}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ollamaflow.cli", "up", *args],
            env={**base, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return UpProcess(proc, log)


def _parents() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rpartition(")")[2].split()[1])
    return parents


def child_pid(pid: int, *words: str) -> int | None:
    """The live direct child of ``pid`` whose command line holds each of ``words`` as an argument."""
    for child, parent in _parents().items():
        if parent == pid and process_is_live(child):
            argv = process_command_line(child)
            if all(word in argv or any(a.endswith("/" + word) for a in argv) for word in words):
                return child
    return None


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (Linux /proc)."""
    parents = _parents()
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return {p for p in found if process_is_live(p)}


def free_port_pair() -> int:
    """A port P with P+1 also free (a second data plane goes on the next port)."""
    for _ in range(50):
        port = free_port()
        if port < 65535 and port_is_free(port + 1):
            return port
    raise AssertionError("no two adjacent free ports")
