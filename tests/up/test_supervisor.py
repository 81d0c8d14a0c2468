"""The supervisor of ``ollamaflow up`` with small real child processes."""

from __future__ import annotations

import io
import sys
import threading
from pathlib import Path

import pytest

from ollamaflow.processes import free_port, process_is_live
from ollamaflow.supervisor import LinePrinter, StartupError, StopRequested, Supervisor

# Prints a line, then waits; on SIGTERM appends its name to a file and exits (or, if stubborn, ignores it).
CHILD = """
import signal, sys, time
name, record, stubborn = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
def bye(signum, frame):
    if stubborn:
        return
    with open(record, "a") as out:
        out.write(name + "\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
print("hello from " + name, flush=True)
while True:
    time.sleep(0.05)
"""


def _child(name: str, record: Path, *, stubborn: bool = False) -> list[str]:
    return [sys.executable, "-c", CHILD, name, str(record), "1" if stubborn else "0"]


def _supervisor(
    stop_timeout: float = 10.0, log_dir: Path | None = None
) -> tuple[Supervisor, io.StringIO, threading.Event]:
    out = io.StringIO()
    stop = threading.Event()
    return Supervisor(LinePrinter(out), stop, stop_timeout=stop_timeout, log_dir=log_dir), out, stop


def test_stop_all_goes_stage_by_stage_highest_first(tmp_path: Path) -> None:
    supervisor, out, _ = _supervisor()
    record = tmp_path / "order"
    children = [
        supervisor.start("low", _child("low", record), {}, stage=0),
        supervisor.start("high-a", _child("high-a", record), {}, stage=2),
        supervisor.start("mid", _child("mid", record), {}, stage=1),
        supervisor.start("high-b", _child("high-b", record), {}, stage=2),
    ]
    for child in children:
        while f"hello from {child.name}" not in out.getvalue():
            assert child.proc.poll() is None
            threading.Event().wait(0.05)
    supervisor.stop_all()
    order = record.read_text().split()
    assert sorted(order[:2]) == ["high-a", "high-b"]
    assert order[2:] == ["mid", "low"]
    assert all(not process_is_live(c.pid) for c in children)
    assert "low          | hello from low" in out.getvalue()


def test_a_child_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    supervisor, out, _ = _supervisor(stop_timeout=0.5)
    child = supervisor.start("stubborn", _child("stubborn", tmp_path / "r", stubborn=True), {}, stage=0)
    while "hello from stubborn" not in out.getvalue():
        threading.Event().wait(0.05)
    supervisor.stop_all()
    assert child.proc.returncode == -9
    assert "stubborn still ran 0.5 s after SIGTERM; killed" in out.getvalue()


def test_a_child_given_a_longer_stop_timeout_gets_it(tmp_path: Path) -> None:
    """A data plane drains for its drain timeout after SIGTERM: the supervisor's default must not cut
    it short."""
    supervisor, out, _ = _supervisor(stop_timeout=0.2)
    slow = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: (time.sleep(1.0), sys.exit(0)))\n"
        "print('hello from draining', flush=True)\n"
        "while True: time.sleep(0.05)\n"
    )
    child = supervisor.start("draining", [sys.executable, "-c", slow], {}, stage=2, stop_timeout=10.0)
    while "hello from draining" not in out.getvalue():
        assert child.proc.poll() is None
        threading.Event().wait(0.05)
    supervisor.stop_all()
    assert child.proc.returncode == 0
    assert "killed" not in out.getvalue()


def test_wait_ready_reports_a_child_that_dies(tmp_path: Path) -> None:
    supervisor, out, _ = _supervisor()
    argv = [sys.executable, "-c", "print('cannot start'); raise SystemExit(3)"]
    child = supervisor.start("broken", argv, {}, stage=0)
    with pytest.raises(StartupError, match="broken exited with code 3 while starting"):
        supervisor.wait_ready(child, f"http://127.0.0.1:{free_port()}/readyz", timeout=30)
    assert "broken       | cannot start" in out.getvalue()
    assert child.exit_code() == 3


def test_wait_ready_gives_way_to_a_stop_request(tmp_path: Path) -> None:
    supervisor, out, stop = _supervisor()
    child = supervisor.start("idle", _child("idle", tmp_path / "r"), {}, stage=0)
    # The child greets only after installing its SIGTERM handler; stopping it earlier would kill it
    # with the default action (-15) instead of the clean exit this test checks.
    while "hello from idle" not in out.getvalue():
        assert child.proc.poll() is None
        threading.Event().wait(0.05)
    stop.set()
    with pytest.raises(StopRequested):
        supervisor.wait_ready(child, f"http://127.0.0.1:{free_port()}/readyz", timeout=30)
    supervisor.stop_all()
    assert child.proc.returncode == 0


def test_a_dead_child_is_started_again_with_its_output_appended_to_its_log_file(tmp_path: Path) -> None:
    supervisor, out, _ = _supervisor(log_dir=tmp_path / "logs")
    # Prints its argument and the run number it finds in a file, then exits with 5.
    script = (
        "import pathlib, sys; f = pathlib.Path(sys.argv[1]); n = int(f.read_text() or 0) + 1 "
        "if f.exists() else 1; f.write_text(str(n)); print('run', n, 'with', sys.argv[2]); sys.exit(5)"
    )
    argv = [sys.executable, "-c", script, str(tmp_path / "runs"), "same-port"]
    child = supervisor.start("flaky", argv, {}, stage=0)
    first = child.pid
    while child.exit_code() is None:
        threading.Event().wait(0.05)
    assert child.exit_code() == 5
    supervisor.respawn(child)
    assert child.pid != first
    while child.exit_code() is None:
        threading.Event().wait(0.05)
    child.join_output()
    lines = (tmp_path / "logs" / "flaky.log").read_text().splitlines()
    assert [line for line in lines if not line.startswith("---- ollamaflow up: flaky started")] == [
        "run 1 with same-port",
        "run 2 with same-port",
    ]
    assert sum(line.startswith("---- ollamaflow up: flaky started (pid ") for line in lines) == 2
    assert "flaky        | run 2 with same-port" in out.getvalue()
    assert child.log_path == tmp_path / "logs" / "flaky.log"
    supervisor.stop_all()


def test_a_child_stopped_on_purpose_is_not_reported_dead(tmp_path: Path) -> None:
    supervisor, out, _ = _supervisor()
    child = supervisor.start("calm", _child("calm", tmp_path / "r"), {}, stage=0)
    while "hello from calm" not in out.getvalue():
        threading.Event().wait(0.05)
    assert child.exit_code() is None
    supervisor.stop_all()
    assert child.proc.returncode == 0 and child.exit_code() is None
    with pytest.raises(RuntimeError, match="live still runs"):
        live = supervisor.start("live", _child("live", tmp_path / "r"), {}, stage=0)
        try:
            supervisor.respawn(live)
        finally:
            supervisor.stop_all()
