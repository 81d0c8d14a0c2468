"""Driving load with wrk (a C load generator), when it is installed.

One Python process tops out near 4k requests/s, well below what the simulator serves directly, so
the direct figure would measure the client instead. wrk on one thread does several times that.
A Lua script sets the request and, when wrk is done, prints one line of JSON that ``parse_report``
reads. wrk takes whole seconds only.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
from pathlib import Path

import msgspec

from ollamaflow.bench.scenarios import Measured, Summary

__all__ = ["WrkReport", "lua_script", "parse_report", "run_wrk", "wrk_path", "wrk_version"]

_MARK = "OLLAMAFLOW-BENCH "

# Printed by wrk's done() hook: counters and latency percentiles in microseconds.
_DONE = (
    "done = function(summary, latency, requests)\n"
    "  local e = summary.errors\n"
    f"  io.write(string.format('\\n{_MARK}"
    '{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,'
    '"timeout":%d,"p50_us":%.1f,"p99_us":%.1f}\\n\','
    "\n    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,"
    "\n    latency:percentile(50), latency:percentile(99)))\n"
    "end\n"
)


class WrkReport(msgspec.Struct, frozen=True):
    """What the Lua hook prints. ``requests`` counts every answer, non-2xx/3xx ones (``status``) too."""

    requests: int
    duration_us: int
    connect: int
    read: int
    write: int
    status: int
    timeout: int
    p50_us: float
    p99_us: float

    @property
    def errors(self) -> int:
        return self.connect + self.read + self.write + self.status + self.timeout

    def summary(self) -> Summary:
        ok = self.requests - self.status
        elapsed = self.duration_us / 1e6
        kinds = ("connect", "read", "write", "status", "timeout")
        first = ", ".join(f"{k} {getattr(self, k)}" for k in kinds if getattr(self, k))
        return Summary(
            requests=ok,
            errors=self.errors,
            rps=ok / elapsed if elapsed > 0 else 0.0,
            p50_ms=self.p50_us / 1000.0,
            p99_ms=self.p99_us / 1000.0,
            first_error=f"wrk errors: {first}" if first else "",
        )


def _lua_string(data: bytes) -> str:
    """A Lua string literal holding ``data`` exactly (decimal escapes for anything but plain text)."""
    plain = set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 :,.{}[]_-")
    return '"' + "".join(chr(b) if b in plain else f"\\{b:03d}" for b in data) + '"'


def lua_script(body: bytes, content_type: str = "application/json", host: str = "") -> str:
    """The request (and the report hook); ``host`` replaces the Host header wrk derives from the URL."""
    host_line = f'wrk.headers["Host"] = {_lua_string(host.encode())}\n' if host else ""
    return (
        'wrk.method = "POST"\n'
        f"wrk.body = {_lua_string(body)}\n"
        f'wrk.headers["Content-Type"] = {_lua_string(content_type.encode())}\n' + host_line + _DONE
    )


def parse_report(stdout: str) -> WrkReport:
    for line in reversed(stdout.splitlines()):
        if line.startswith(_MARK):
            return msgspec.json.decode(line[len(_MARK) :], type=WrkReport)
    raise RuntimeError(f"wrk printed no report:\n{stdout[-2000:]}")


def wrk_path() -> str | None:
    return shutil.which("wrk")


def wrk_version(path: str) -> str:
    done = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    words = (done.stdout + done.stderr).split()
    return words[1] if len(words) > 1 else "?"


def _wrk(path: str, url: str, script: Path, connections: int, threads: int, seconds: int) -> WrkReport:
    done = subprocess.run(
        [
            path,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "30s",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout[-2000:]}")
    return parse_report(done.stdout)


def run_wrk(
    path: str,
    url: str,
    body: bytes,
    *,
    connections: int,
    duration_s: float,
    warmup_s: float,
    threads: int = 1,
    host: str = "",
) -> Measured:
    """A warm-up run (not measured), then the measured run; durations round up to whole seconds."""
    threads = max(1, min(threads, connections))
    with tempfile.TemporaryDirectory(prefix="ollamaflow-wrk-") as tmp:
        script = Path(tmp) / "bench.lua"
        script.write_text(lua_script(body, host=host))
        sent = 0
        if warmup_s > 0:
            warm = _wrk(path, url, script, connections, threads, max(1, math.ceil(warmup_s)))
            sent += warm.requests + warm.errors - warm.status
        report = _wrk(path, url, script, connections, threads, max(1, math.ceil(duration_s)))
    return Measured(summary=report.summary(), sent=sent + report.requests + report.errors - report.status)
