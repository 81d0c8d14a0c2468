"""Generator processes of the benchmark: a spec in on stdin, a result out on stdout (JSON both).

Shared by the closed-loop (``loadgen``), open-loop (``openloop_gen``) and many-streams
(``streams_gen``) generators: the parent starts every process first (so that all start their clocks
together), then collects each one's result; a worker installs uvloop when it can and writes its
result whole.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from typing import IO, TypeVar

import msgspec

__all__ = ["Worker", "collect", "start", "use_uvloop", "write_result"]

T = TypeVar("T")
Worker = tuple[subprocess.Popen[bytes], IO[bytes]]


def start(stack: contextlib.ExitStack, module: str, spec: msgspec.Struct) -> Worker:
    """Run ``python -m module`` with ``spec`` on its stdin; its stderr kept in a file (not a pipe:
    read only at the end)."""
    errors = stack.enter_context(tempfile.TemporaryFile())  # noqa: SIM115 (closed by the stack)
    proc = subprocess.Popen(
        [sys.executable, "-m", module], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors
    )
    assert proc.stdin is not None
    proc.stdin.write(msgspec.json.encode(spec))
    proc.stdin.close()
    return proc, errors


def collect(workers: list[Worker], result_type: type[T], what: str) -> list[T]:
    """Each worker's result, in order; RuntimeError with the end of its stderr if one failed."""
    results = []
    for proc, errors in workers:
        assert proc.stdout is not None
        out = proc.stdout.read()
        proc.stdout.close()
        if proc.wait() != 0:
            errors.seek(0)
            message = errors.read().decode(errors="replace")
            raise RuntimeError(f"{what} failed ({proc.returncode}): {message[-2000:]}")
        results.append(msgspec.json.decode(out, type=result_type))
    return results


def use_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()


def write_result(result: msgspec.Struct) -> None:
    """Write ``result`` to stdout whole. After uvloop ran, sys.stdout.buffer.write stops at the pipe's
    64 KiB when the parent is still reading another process's result, and the rest is lost: so it is
    written chunk by chunk on a blocking descriptor."""
    os.set_blocking(sys.stdout.fileno(), True)
    data = memoryview(msgspec.json.encode(result))
    while data:
        data = data[os.write(sys.stdout.fileno(), data) :]
