"""The benchmark's readings of /proc: a process tree, its CPU time, its memory, its open-files limit."""

from __future__ import annotations

import os
import resource
import subprocess
import sys

from ollamaflow.bench.procfs import cpu_seconds, open_files_limit, process_tree, rss_kb, tree_rss_kb


def test_rss_and_open_files_limit_of_this_process() -> None:
    assert rss_kb(os.getpid()) > 1000
    assert open_files_limit(os.getpid()) == resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def test_rss_of_a_process_tree_counts_its_children() -> None:
    own = rss_kb(os.getpid())
    # A child that holds 64 MiB until its stdin closes.
    code = "import sys; held = b'x' * (64 << 20); print(1, flush=True); sys.stdin.read()"
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"1\n"
        assert process_tree(os.getpid())[0] == os.getpid()
        assert child.pid in process_tree(os.getpid())
        assert tree_rss_kb(os.getpid()) >= own + 60 * 1024
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=10)


def test_cpu_time_of_a_process_tree_counts_its_children() -> None:
    before = cpu_seconds(os.getpid())
    # A child that spins for 0.5 s of CPU, then waits for its stdin to close.
    code = (
        "import sys, time\n"
        "end = time.process_time() + 0.5\n"
        "while time.process_time() < end: pass\n"
        "print(1, flush=True); sys.stdin.read()"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"1\n"
        assert cpu_seconds(child.pid) >= 0.4
        assert cpu_seconds(os.getpid()) - before >= 0.4
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=10)
