"""The restart policy of ``ollamaflow up`` and the watch that applies it, without processes."""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ollamaflow.childlogs import ChildLog
from ollamaflow.restarts import BACKEND_POLICY, PART_POLICY, GiveUp, Restart, RestartPolicy, RestartTracker
from ollamaflow.supervisor import LinePrinter
from ollamaflow.watch import Watch


def _crash_at_once(tracker: RestartTracker, now: float) -> tuple[Restart | GiveUp, float]:
    """The child dies at ``now``; if restarted, it is started after the delay. Returns the decision
    and the time of the restart."""
    decision = tracker.exited(now)
    if isinstance(decision, Restart):
        now += decision.delay
        tracker.restarted(now)
    return decision, now


def test_delays_double_up_to_the_cap_and_count_restarts() -> None:
    policy = RestartPolicy(first_delay=0.5, max_delay=4.0, max_restarts=None)
    tracker = RestartTracker(policy, started_at=0.0)
    now, seen = 10.0, []
    for _ in range(6):
        decision, now = _crash_at_once(tracker, now)
        assert isinstance(decision, Restart)
        seen.append((decision.delay, decision.count))
    assert seen == [(0.5, 1), (1.0, 2), (2.0, 3), (4.0, 4), (4.0, 5), (4.0, 6)]


def test_a_stable_run_resets_the_delay_but_not_the_count() -> None:
    tracker = RestartTracker(PART_POLICY, started_at=0.0)
    now = 1.0
    for _ in range(3):
        _, now = _crash_at_once(tracker, now)
    decision = tracker.exited(now + PART_POLICY.stable_after - 0.1)
    assert decision == Restart(delay=4.0, count=4)  # not stable yet: still backing off
    tracker.restarted(now + 100)
    assert tracker.exited(now + 100 + PART_POLICY.stable_after) == Restart(delay=0.5, count=5)


def test_a_crash_loop_is_given_up_after_the_limit_within_the_window() -> None:
    tracker = RestartTracker(PART_POLICY, started_at=0.0)
    now = 0.1
    for expected in range(1, 6):
        decision, now = _crash_at_once(tracker, now)
        assert decision == Restart(delay=0.5 * 2 ** (expected - 1), count=expected)
    decision = tracker.exited(now + 0.1)
    assert isinstance(decision, GiveUp)
    assert "5 restarts within 60 s" in decision.reason and "the limit is 5" in decision.reason


def test_restarts_spread_beyond_the_window_never_give_up() -> None:
    policy = RestartPolicy(max_restarts=2, window=60.0, stable_after=1000.0)
    tracker = RestartTracker(policy, started_at=0.0)
    now = 0.0
    for _ in range(10):
        now += 40.0  # each run lasts 40 s: never two restarts within one minute
        decision = tracker.exited(now)
        assert isinstance(decision, Restart)
        now += decision.delay
        tracker.restarted(now)


def test_simulated_backends_come_back_after_a_fixed_pause_forever() -> None:
    tracker = RestartTracker(BACKEND_POLICY, started_at=0.0)
    now = 0.0
    for count in range(1, 30):
        decision, now = _crash_at_once(tracker, now)
        assert decision == Restart(delay=5.0, count=count)


@dataclass
class _AlwaysCrashing:
    """A unit that dies as soon as it is started."""

    name: str
    log_path: Path | None
    respawns: int = 0
    alive: bool = False

    def exit_code(self) -> int | None:
        return None if self.alive else 7

    def respawn(self) -> None:
        self.respawns += 1


@dataclass
class _Healthy:
    name: str = "steady"
    log_path: Path | None = None
    respawns: list[int] = field(default_factory=list)

    def exit_code(self) -> int | None:
        return None

    def respawn(self) -> None:
        self.respawns.append(1)


class _Clock:
    """Advances a second on every reading: the watch's delays pass without waiting for them."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def test_watch_restarts_with_backoff_then_gives_up_with_the_log_tail(tmp_path: Path) -> None:
    log = tmp_path / "crasher.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)) + "fatal: cannot bind\n")
    out = io.StringIO()
    watch = Watch(LinePrinter(out), threading.Event(), clock=_Clock(), poll=0.001)
    crasher, steady = _AlwaysCrashing("crasher", log), _Healthy()
    watch.add(crasher, PART_POLICY)
    watch.add(steady, PART_POLICY)
    assert watch.run() == 1
    text = out.getvalue()
    assert crasher.respawns == 5 and steady.respawns == []
    for count, delay in enumerate([0.5, 1.0, 2.0, 4.0, 8.0], start=1):
        assert f"crasher exited with code 7; restarting in {delay:.1f} s (restart {count})" in text
    assert "error: crasher exited with code 7; it exited again after 5 restarts within 60 s" in text
    assert f"last lines of {log}:" in text
    assert "fatal: cannot bind" in text and "line 99" in text and "line 10\n" not in text


def test_watch_returns_0_on_a_stop_request() -> None:
    stop = threading.Event()
    stop.set()
    out = io.StringIO()
    watch = Watch(LinePrinter(out), stop, poll=0.001)
    watch.add(_Healthy(), PART_POLICY)
    assert watch.run() == 0
    assert "stop requested" in out.getvalue()


def test_child_logs_append_and_rotate_at_their_size_bound(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "dataplane-1.log"
    log = ChildLog(path, max_bytes=1000)
    for i in range(200):
        log.write(f"line {i:03d} " + "x" * 20)
    log.close()
    assert path.stat().st_size <= 1000
    rotated = path.with_name("dataplane-1.log.1")
    assert rotated.exists() and rotated.stat().st_size <= 1000
    assert path.read_text().splitlines()[-1].startswith("line 199")
    again = ChildLog(path, max_bytes=1000)
    again.write("after a restart")
    again.close()
    assert path.read_text().splitlines()[-1] == "after a restart"
    assert not path.with_name("dataplane-1.log.2").exists()
