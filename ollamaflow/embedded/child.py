"""What both embedded servers share: a child process with a data directory, a port and a log."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from ollamaflow.processes import (
    parent_death_signal,
    stop_process,
)

__all__ = ["POLL", "START_TIMEOUT", "STOP_TIMEOUT", "ChildServer", "EmbeddedServerError", "log_tail"]

START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
POLL = 0.05


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be started (the message carries the tail of its log)."""


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


class ChildServer:
    """Start/stop bookkeeping common to both servers."""

    name = "server"

    def __init__(self, data_dir: Path, port: int | None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"{self.name}.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def exit_code(self) -> int | None:
        """The exit code of a server that was started and died; None while it runs or when stopped."""
        return self._proc.poll() if self._proc is not None else None

    def relaunch(self) -> None:
        """Start a server that died again, on the same port and data, without waiting for it to answer
        (whoever uses it retries; if the port is still taken it exits, and the caller tries again)."""
        if self.running:
            return
        self.stop()  # reaps the dead process and closes its log
        self._launch()

    @property
    def url(self) -> str:
        if self.port is None:
            raise EmbeddedServerError(f"embedded {self.name} has not been started")
        return self._url(self.port)

    def _url(self, port: int) -> str:
        raise NotImplementedError

    def _spawn(self, argv: list[str], *, death_signal: int, **popen: object) -> subprocess.Popen[bytes]:
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # A session of its own: Ctrl-C in a terminal must reach only the supervisor, which stops
            # the servers last, after the planes that use them.
            start_new_session=True,
            preexec_fn=parent_death_signal(death_signal),
            **popen,  # type: ignore[arg-type]
        )
        return self._proc

    def _fail(self, why: str) -> EmbeddedServerError:
        self.stop()
        return EmbeddedServerError(
            f"embedded {self.name} failed to start ({why}); log {self.log_path}:\n{log_tail(self.log_path)}"
        )

    def _stop(self, sig: int) -> None:
        if self._proc is not None:
            stop_process(self._proc, sig=sig, timeout=STOP_TIMEOUT)
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self) -> None:
        raise NotImplementedError

    def start(self) -> str:
        """Start the server and wait until it answers; its URL."""
        if self.running:
            return self.url
        proc = self._launch()
        deadline = time.monotonic() + START_TIMEOUT
        while not self._answers(proc):
            if proc.poll() is not None:
                raise self._fail(f"exit code {proc.returncode}")
            if time.monotonic() > deadline:
                raise self._fail(f"not ready after {START_TIMEOUT:.0f} s")
            time.sleep(POLL)
        return self.url

    def _launch(self) -> subprocess.Popen[bytes]:
        """Start the process (choosing the ports on the first start); no waiting."""
        raise NotImplementedError

    def _answers(self, proc: subprocess.Popen[bytes]) -> bool:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
