"""What ``ollamaflow up`` does once the cluster is ready: keep every child running.

A child that dies is started again, on its own port and data, after the delay its ``RestartPolicy``
gives (``ollamaflow.restarts``); the others are not touched meanwhile. Only a crash loop ends the
run, with the reason and the last lines of that child's log. Runs on the main thread, so children
started again get the parent-death signal like the first ones (see ``parent_death_signal``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ollamaflow.embedded import EmbeddedServerError
from ollamaflow.embedded.child import ChildServer, log_tail
from ollamaflow.restarts import GiveUp, RestartPolicy, RestartTracker
from ollamaflow.supervisor import Child, LinePrinter, Supervisor

__all__ = ["LOG_TAIL_LINES", "ChildUnit", "ServerUnit", "Unit", "Watch"]

LOG_TAIL_LINES = 20
# What starting a process again can raise: no binary, no permission, a server's own refusal.
_RESPAWN_ERRORS = (OSError, EmbeddedServerError, RuntimeError)


class Unit(Protocol):
    """Something ``Watch`` keeps running."""

    @property
    def name(self) -> str: ...

    @property
    def log_path(self) -> Path | None: ...

    def exit_code(self) -> int | None: ...

    def respawn(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ChildUnit:
    """A plane or simulator process of the supervisor."""

    supervisor: Supervisor
    child: Child

    @property
    def name(self) -> str:
        return self.child.name

    @property
    def log_path(self) -> Path | None:
        return self.child.log_path

    def exit_code(self) -> int | None:
        return self.child.exit_code()

    def respawn(self) -> None:
        self.supervisor.respawn(self.child)


@dataclass(frozen=True, slots=True)
class ServerUnit:
    """An embedded NATS or PostgreSQL."""

    server: ChildServer

    @property
    def name(self) -> str:
        return self.server.name

    @property
    def log_path(self) -> Path | None:
        return self.server.log_path

    def exit_code(self) -> int | None:
        return self.server.exit_code()

    def respawn(self) -> None:
        self.server.relaunch()


@dataclass(slots=True)
class _Watched:
    unit: Unit
    tracker: RestartTracker
    restart_at: float | None = None


class Watch:
    """Polls the units; restarts the dead ones when their delay is over."""

    def __init__(
        self,
        printer: LinePrinter,
        stop: threading.Event,
        *,
        clock: Callable[[], float] = time.monotonic,
        poll: float = 0.25,
    ) -> None:
        self._printer = printer
        self._stop = stop
        self._clock = clock
        self._poll = poll
        self._watched: list[_Watched] = []

    def add(self, unit: Unit, policy: RestartPolicy) -> None:
        self._watched.append(_Watched(unit, RestartTracker(policy, started_at=self._clock())))

    def run(self) -> int:
        """Until a stop is requested (0) or a child crash-loops (1)."""
        while not self._stop.wait(self._poll):
            for watched in self._watched:
                if not self._tend(watched):
                    return 1
        self._say("stop requested")
        return 0

    def _say(self, text: str) -> None:
        self._printer.line("up", text)

    def _tend(self, watched: _Watched) -> bool:
        """Restart or schedule a restart as needed; False when the run must end."""
        unit, now = watched.unit, self._clock()
        if watched.restart_at is not None:
            if now < watched.restart_at:
                return True
            watched.restart_at = None
            watched.tracker.restarted(now)
            try:
                unit.respawn()
            except _RESPAWN_ERRORS as exc:
                return self._exited(watched, now, f"could not be started again ({exc})")
            return True
        code = unit.exit_code()
        if code is None:
            return True
        return self._exited(watched, now, f"exited with code {code}")

    def _exited(self, watched: _Watched, now: float, what: str) -> bool:
        unit = watched.unit
        decision = watched.tracker.exited(now)
        if isinstance(decision, GiveUp):
            self._say(f"error: {unit.name} {what}; {decision.reason}; stopping everything")
            if unit.log_path is not None:
                self._say(f"last lines of {unit.log_path}:")
                for line in log_tail(unit.log_path, LOG_TAIL_LINES).splitlines():
                    self._say(f"  {line}")
            return False
        self._say(f"{unit.name} {what}; restarting in {decision.delay:.1f} s (restart {decision.count})")
        watched.restart_at = now + decision.delay
        return True
