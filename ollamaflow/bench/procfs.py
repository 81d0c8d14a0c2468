"""What /proc (Linux) says of the processes the benchmark starts: a process and its descendants (a
data plane's parent and workers), their CPU time, resident memory and open-files limit."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

__all__ = ["cpu_seconds", "open_files_limit", "process_tree", "rss_kb", "tree_rss_kb"]


def _stat(pid: int) -> list[str]:
    # Fields after the command name, which may itself hold spaces and parentheses.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _children() -> dict[int, list[int]]:
    """Every process's children, from one pass over /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            children.setdefault(int(_stat(int(entry.name))[1]), []).append(int(entry.name))
    return children


def process_tree(pid: int) -> list[int]:
    """A process and its live descendants, the process first."""
    children = _children()
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(children.get(current, ()))
    return tree


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process and its live descendants."""
    ticks = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = _stat(member)
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    """Resident set size of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def tree_rss_kb(pid: int) -> int:
    """RSS of a process and its descendants, in KiB; one that ends while it is read counts nothing."""
    total = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError, RuntimeError):
            total += rss_kb(member)
    return total


def open_files_limit(pid: int) -> int:
    """The soft open-files limit a process runs with."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft = line.split()[3]
            return sys.maxsize if soft == "unlimited" else int(soft)
    raise RuntimeError(f"no open-files limit for process {pid}")
