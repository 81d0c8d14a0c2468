"""Small process and port helpers shared by the embedded servers and the ``up`` supervisor."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "free_port",
    "parent_death_signal",
    "port_is_free",
    "process_command_line",
    "process_is_live",
    "stop_process",
]

_PR_SET_PDEATHSIG = 1


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether ``host:port`` can be bound now; SO_REUSEADDR matches what servers set."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def process_is_live(pid: int) -> bool:
    """True when ``pid`` runs and is not a zombie.

    A stopped child can stay a zombie for a while when PID 1 reaps slowly, so the existence of
    ``/proc/<pid>`` alone proves nothing; the state letter in ``/proc/<pid>/stat`` does.
    """
    if pid <= 0:
        return False
    stat = Path(f"/proc/{pid}/stat")
    if stat.parent.parent.is_dir() and Path("/proc/self").exists():
        try:
            text = stat.read_text()
        except OSError:
            return False
        # The command name sits in parentheses and may hold spaces; the state follows the last ')'.
        state = text.rpartition(")")[2].split()[0]
        return state not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_command_line(pid: int) -> list[str]:
    """The argv of ``pid`` where the platform shows it (Linux ``/proc``), else an empty list."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def parent_death_signal(sig: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to send ``sig`` to the child when its parent dies.

    This is the safety net for a supervisor killed with SIGKILL: its children would otherwise keep
    their ports and data directories. Elsewhere there is no such call and this returns None.
    """
    if not sys.platform.startswith("linux"):
        return None
    # Linux ties the signal to the thread that forks: a child started from a short-lived worker
    # thread would be killed when that thread ends, so only the main thread arms it.
    if threading.current_thread() is not threading.main_thread():
        return None
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    libc = ctypes.CDLL(libc_name, use_errno=True)

    def _set() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)

    return _set


def stop_process(proc: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
    """Send ``sig``, wait up to ``timeout`` seconds, then SIGKILL; always reaps. Returns the exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
    return int(proc.returncode)
