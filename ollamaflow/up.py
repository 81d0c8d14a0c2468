"""``ollamaflow up``: a whole cluster on one machine.

Embedded PostgreSQL and NATS (unless URLs are given), migrations, the control plane and N data planes,
each plane a child process of its own started through the ``ollamaflow`` CLI; with ``--demo`` also
three simulated backends and a catch-all frontend over them. Once everything answers, a child that dies
is started again on the same port and data (``ollamaflow.watch``); only a crash loop ends the run.
Ctrl-C or SIGTERM stops the data planes (each drains: it finishes what it runs, up to its drain timeout,
and gets that long plus ``DRAIN_STOP_MARGIN`` before SIGKILL), then the control plane, then the
simulators, then the embedded servers. State stays in the data directory: the database, the JetStream
store, the admin token, the secrets key (both planes get it: it seals backend secrets in the snapshot),
the embedded NATS's per-role passwords, the snapshot signing key pair, the data planes' snapshot caches
and a log file per child.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TextIO

import httpx

from dataplane.settings import DataPlaneSettings
from dataplane.settings import load_settings as load_dataplane_settings
from ollamaflow.datadir import DEFAULT_DATA_DIR, DataDir, DataDirBusy
from ollamaflow.demo import DemoError, configure_demo, demo_revision
from ollamaflow.embedded import EmbeddedNats, EmbeddedPostgres, EmbeddedServerError
from ollamaflow.nats_config import ROLE_USERS, NatsUser, literal_password, render_authorization, write_private
from ollamaflow.processes import free_port, port_is_free
from ollamaflow.restarts import BACKEND_POLICY, PART_POLICY
from ollamaflow.supervisor import Child, LinePrinter, StartupError, StopRequested, Supervisor
from ollamaflow.watch import ChildUnit, ServerUnit, Watch
from shared.bus import BusNames
from shared.bus_permissions import ROLES, Role
from shared.errors import ConfigError
from shared.signing_keys import ensure_key_pair

__all__ = ["UpOptions", "dataplane_ports", "dataplane_stop_timeout", "run"]

CLI = [sys.executable, "-m", "ollamaflow.cli"]
# Settings `up` decides for each child; anything else named OLLAMAFLOW_* passes through unchanged.
_DECIDED_BY_UP = (
    "OLLAMAFLOW_DATABASE_URL",
    "OLLAMAFLOW_ADMIN_TOKENS",
    "OLLAMAFLOW_NATS_URL",
    "OLLAMAFLOW_SNAPSHOT_CACHE",
    "OLLAMAFLOW_DATAPLANE_ID",
    "OLLAMAFLOW_DATAPLANE_HOST",
    "OLLAMAFLOW_DATAPLANE_PORT",
    "OLLAMAFLOW_CONTROLPLANE_HOST",
    "OLLAMAFLOW_CONTROLPLANE_ID",
    "OLLAMAFLOW_CONTROLPLANE_URL",
    "OLLAMAFLOW_CONTROLPLANE_PORT",
    "OLLAMAFLOW_SNAPSHOT_SIGNING_KEY_FILE",
    "OLLAMAFLOW_SNAPSHOT_PUBLIC_KEY_FILES",
)
# Decided by `up` only when it runs the embedded NATS (it made the users); else they pass through.
_DECIDED_WITH_EMBEDDED_NATS = ("OLLAMAFLOW_NATS_USER", "OLLAMAFLOW_NATS_PASSWORD")
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}
# A local cluster works with OllamaFlow's web UI (a Next.js app on port 3000) out of the box: both
# planes let its pages call them, unless the environment says otherwise (``none``: no CORS).
UI_ORIGINS = "http://localhost:3000,http://127.0.0.1:3000"
_STARTUP_ERRORS = (StartupError, EmbeddedServerError, DemoError, httpx.HTTPError, OSError)
_STAGE_SIMS, _STAGE_CONTROLPLANE, _STAGE_DATAPLANES = 0, 1, 2
# A data plane's stop takes up to its drain timeout, then a few seconds to end what is left (its
# END_GRACE), publish its last report and close; SIGKILL comes only after this much more.
DRAIN_STOP_MARGIN = 10.0


@dataclass(frozen=True, slots=True)
class UpOptions:
    data_dir: Path = DEFAULT_DATA_DIR
    demo: bool = False
    dataplanes: int = 1
    # Worker processes per data plane (ollamaflow dataplane --workers); None: its environment says.
    workers: int | None = None
    controlplanes: int = 1
    database_url: str | None = None
    nats_url: str | None = None
    port: int = 43411
    controlplane_port: int = 43412
    host: str = "127.0.0.1"
    simulators: int = 3
    sim_tokens_per_second: float = 30.0
    ready_timeout: float = 60.0
    stop_timeout: float = 10.0


def dataplane_ports(first: int, count: int, skip: int) -> list[int]:
    """``count`` ports counting up from ``first``, leaving out ``skip`` (the control plane's)."""
    ports: list[int] = []
    port = first
    while len(ports) < count:
        if port != skip:
            ports.append(port)
        port += 1
    return ports


def dataplane_stop_timeout(env: Mapping[str, str], minimum: float) -> float:
    """How long a data plane started with ``env`` may take to stop: its drain timeout
    (OLLAMAFLOW_DRAIN_TIMEOUT, from its environment or config file) plus ``DRAIN_STOP_MARGIN``."""
    try:
        drain = load_dataplane_settings(environ=env).drain_timeout
    except ConfigError:  # the data plane itself will say what is wrong
        drain = DataPlaneSettings().drain_timeout
    return max(minimum, drain + DRAIN_STOP_MARGIN)


def run(options: UpOptions, out: TextIO, environ: Mapping[str, str] | None = None) -> int:
    """Run until Ctrl-C/SIGTERM (0) or until something fails to start or crash-loops (1). Call from the
    main thread."""
    printer = LinePrinter(out)
    stop = threading.Event()
    data = DataDir(options.data_dir.resolve())
    env = dict(os.environ if environ is None else environ)
    try:
        data.create()
        with _stop_on_signals(stop), data.locked():
            with ExitStack() as stack:
                # Errors are reported before the stack unwinds, so the cause comes before the shutdown.
                try:
                    code = _Cluster(options, data, env, printer, stop, stack).run()
                except _STARTUP_ERRORS as exc:
                    printer.line("up", f"error: {exc}")
                    code = 1
                except StopRequested:
                    printer.line("up", "stop requested during start-up")
                    code = 0
            printer.line("up", "stopped")
            return code
    except (DataDirBusy, OSError) as exc:
        printer.line("up", f"error: {exc}")
        return 1


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    def _handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    wanted = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    previous = {sig: signal.signal(sig, _handler) for sig in wanted}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _Cluster:
    """One run of ``up``: starts the parts in order, registering each one's stop on ``stack``."""

    def __init__(
        self,
        options: UpOptions,
        data: DataDir,
        environ: dict[str, str],
        printer: LinePrinter,
        stop: threading.Event,
        stack: ExitStack,
    ) -> None:
        self.options = options
        self.data = data
        self.environ = environ
        self.printer = printer
        self.stop = stop
        self.stack = stack
        self.local_host = _WILDCARDS.get(options.host, options.host)
        self.ports = dataplane_ports(options.port, options.dataplanes, options.controlplane_port)
        self.embedded: list[EmbeddedPostgres | EmbeddedNats] = []
        self.secrets: dict[str, str] = {}  # the secrets key's setting for both planes (run() decides)
        # Per role: the settings a plane needs to log in to the bus and to sign or check snapshots.
        self.bus_env: dict[Role, dict[str, str]] = {"controlplane": {}, "dataplane": {}}

    def say(self, text: str) -> None:
        self.printer.line("up", text)

    def run(self) -> int:
        self._check_ports()
        tokens, token_source = self._admin_tokens()
        self.secrets = self._secrets_key()
        supervisor = Supervisor(
            self.printer, self.stop, stop_timeout=self.options.stop_timeout, log_dir=self.data.logs
        )
        self.say(f"each child's output also goes to {self.data.logs}/<name>.log")
        self.stack.callback(self._stop_children, supervisor)
        # Everything starts as soon as what it needs is there, and is waited for only when needed:
        # the simulators need nothing, the data planes only NATS.
        sims = self._start_simulators(supervisor) if self.options.demo else []
        self._signing_keys()
        database_url = self.options.database_url or self._start_postgres()
        nats_url = self.options.nats_url or self._start_nats()
        # Once more, now after the embedded servers: the stack unwinds in reverse, so the children
        # are stopped before the servers they use (stopping twice is harmless).
        self.stack.callback(self._stop_children, supervisor)
        dataplanes = self._start_dataplanes(supervisor, nats_url)
        self._migrate(supervisor, database_url)
        controlplane_urls = self._start_controlplanes(supervisor, database_url, nats_url, tokens)
        controlplane_url = controlplane_urls[0]
        revision = self._configure_demo(supervisor, sims, controlplane_url, tokens[0]) if sims else 0
        for child, url in dataplanes:
            supervisor.wait_ready(
                child,
                url + "/readyz",
                timeout=self.options.ready_timeout,
                accept=lambda response: _revision(response) >= revision,
            )
        dataplane_urls = [url for _, url in dataplanes]
        self._print_ready(controlplane_urls, dataplane_urls, database_url, nats_url, tokens[0], token_source)
        self._print_logs(supervisor)
        planes = (
            "the control plane answer"
            if len(controlplane_urls) == 1
            else (f"{len(controlplane_urls)} control planes answer")
        )
        self.say(f"ready: {len(dataplane_urls)} data plane(s) and {planes}; press Ctrl-C to stop")
        return self._watch(supervisor, sims=[child for child, _ in sims])

    def _check_ports(self) -> None:
        options = self.options
        if options.dataplanes < 1:
            raise StartupError("--dataplanes must be at least 1")
        if options.controlplanes < 1:
            raise StartupError("--controlplanes must be at least 1")
        wanted = {options.controlplane_port: "--controlplane-port"}
        for index, port in enumerate(self.ports, start=1):
            wanted[port] = "--port" if index == 1 else f"data plane {index}, counting up from --port"
        for port, what in wanted.items():
            if not 0 < port < 65536:
                raise StartupError(f"port {port} ({what}) is not a TCP port number")
            if not port_is_free(port, options.host):
                raise StartupError(
                    f"port {port} on {options.host} is already in use ({what}); choose another"
                )

    def _admin_tokens(self) -> tuple[list[str], str]:
        given = [t.strip() for t in self.environ.get("OLLAMAFLOW_ADMIN_TOKENS", "").split(",") if t.strip()]
        if given:
            return given, "from OLLAMAFLOW_ADMIN_TOKENS"
        return [self.data.admin_token()], f"stored in {self.data.admin_token_file}"

    def _secrets_key(self) -> dict[str, str]:
        """What gives both planes the same secrets key: the user's (OLLAMAFLOW_SECRETS_KEY or _FILE, passed
        through as it is), else the key file in the data directory, made on the first run."""
        if any(self.environ.get(f"OLLAMAFLOW_SECRETS_KEY{tail}", "").strip() for tail in ("", "_FILE")):
            return {}
        return {"OLLAMAFLOW_SECRETS_KEY_FILE": str(self.data.secrets_key())}

    def _start_postgres(self) -> str:
        server = EmbeddedPostgres(self.data.postgres, durable=True)
        self.say(f"starting embedded PostgreSQL in {self.data.postgres} (log: {server.log_path})")
        url = server.start()
        self.stack.callback(self._stop_embedded, server)
        self.embedded.append(server)
        return url

    def _signing_keys(self) -> None:
        """The snapshot signing key pair, made once in the data directory (the private key owner-only)."""
        private, public = ensure_key_pair(self.data.keys)
        self.bus_env["controlplane"]["OLLAMAFLOW_SNAPSHOT_SIGNING_KEY_FILE"] = str(private)
        self.bus_env["dataplane"]["OLLAMAFLOW_SNAPSHOT_PUBLIC_KEY_FILES"] = str(public)

    def _start_nats(self) -> str:
        """The embedded NATS with one user per role and its permissions; nothing anonymous gets in."""
        names = BusNames(_namespace(self.environ))
        users = []
        for role in ROLES:
            password = self.data.nats_password(role)
            users.append(NatsUser(ROLE_USERS[role], role, literal_password(password)))
            login = {"OLLAMAFLOW_NATS_USER": ROLE_USERS[role], "OLLAMAFLOW_NATS_PASSWORD": password}
            self.bus_env[role] |= login
        config = self.data.nats / "ollamaflow-auth.conf"
        write_private(config, render_authorization(names, users))
        server = EmbeddedNats(self.data.nats, config_file=config)
        self.say(f"starting embedded NATS (JetStream) in {self.data.nats} (log: {server.log_path})")
        url = server.start()
        self.stack.callback(self._stop_embedded, server)
        self.embedded.append(server)
        return url

    def _stop_embedded(self, server: EmbeddedPostgres | EmbeddedNats) -> None:
        self.say(f"stopping embedded {server.name}")
        server.stop()

    def _stop_children(self, supervisor: Supervisor) -> None:
        if supervisor.any_running:
            self.say("stopping child processes")
        supervisor.stop_all()

    def _env(
        self, *, plane_secrets: bool = False, role: Role | None = None, **settings: str
    ) -> dict[str, str]:
        decided = _DECIDED_BY_UP + (_DECIDED_WITH_EMBEDDED_NATS if self.options.nats_url is None else ())
        env = {k: v for k, v in self.environ.items() if k not in decided}
        env["PYTHONUNBUFFERED"] = "1"
        if role is not None:
            env.update(self.bus_env[role])
        env.update(settings)
        if not plane_secrets:
            env.pop("OLLAMAFLOW_DATABASE_URL", None)
            env.pop("OLLAMAFLOW_ADMIN_TOKENS", None)
        return env

    def _ui_origins(self, variable: str) -> dict[str, str]:
        """The web UI's origins for ``variable``, unless the environment sets it (then it passes on)."""
        return {} if self.environ.get(variable, "").strip() else {variable: UI_ORIGINS}

    def _migrate(self, supervisor: Supervisor, database_url: str) -> None:
        child = supervisor.start(
            "migrate",
            [*CLI, "migrate", "--database-url", database_url],
            self._env(plane_secrets=True, OLLAMAFLOW_DATABASE_URL=database_url),
            stage=_STAGE_CONTROLPLANE,
        )
        code = supervisor.wait_exit(child, timeout=self.options.ready_timeout * 2)
        if code != 0:
            raise StartupError(f"migrate exited with code {code}")

    def _start_simulators(self, supervisor: Supervisor) -> list[tuple[Child, int]]:
        started = []
        for index in range(1, self.options.simulators + 1):
            port = free_port()
            argv = [*CLI, "sim", "--host", "127.0.0.1", "--port", str(port)]
            argv += ["--tokens-per-second", f"{self.options.sim_tokens_per_second:g}"]
            child = supervisor.start(f"sim-{index}", argv, self._env(), stage=_STAGE_SIMS)
            started.append((child, port))
        return started

    def _configure_demo(
        self, supervisor: Supervisor, sims: list[tuple[Child, int]], controlplane_url: str, token: str
    ) -> int:
        """Point the demo backends at this run's simulators; the snapshot revision that carries it."""
        for child, port in sims:
            supervisor.wait_ready(
                child, f"http://127.0.0.1:{port}/api/version", timeout=self.options.ready_timeout
            )
        ports = [port for _, port in sims]
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=controlplane_url, headers=headers, timeout=10.0) as admin:
            configure_demo(admin, ports)
            deadline = time.monotonic() + self.options.ready_timeout
            while True:
                response = admin.get("/v1.0/snapshot")
                revision = demo_revision(response.json(), ports) if response.status_code == 200 else None
                if revision is not None:
                    break
                if time.monotonic() > deadline:
                    raise StartupError("the control plane did not publish the demo configuration in time")
                if self.stop.wait(0.1):
                    raise StopRequested
        self.say(f"demo: backends on simulators at ports {', '.join(map(str, ports))}, frontend 'demo'")
        return revision

    def _start_controlplanes(
        self, supervisor: Supervisor, database_url: str, nats_url: str, tokens: list[str]
    ) -> list[str]:
        """Start every control plane (the first on --controlplane-port, further ones on free ports),
        then wait for all of them; their admin URLs, the first's first. One of them holds the lease."""
        started = []
        for index in range(1, self.options.controlplanes + 1):
            port = self.options.controlplane_port if index == 1 else free_port()
            name = "controlplane" if index == 1 else f"controlplane-{index}"
            url = f"http://{_url_host(self.local_host)}:{port}"
            env = self._env(
                plane_secrets=True,
                role="controlplane",
                OLLAMAFLOW_DATABASE_URL=database_url,
                OLLAMAFLOW_NATS_URL=nats_url,
                OLLAMAFLOW_ADMIN_TOKENS=",".join(tokens),
                # A restarted replica finds its own id in the lease and takes it back at once.
                OLLAMAFLOW_CONTROLPLANE_ID=name,
                OLLAMAFLOW_CONTROLPLANE_URL=url,
                **self.secrets,
                **self._ui_origins("OLLAMAFLOW_CORS_ORIGINS"),
            )
            argv = [*CLI, "controlplane", "--host", self.options.host, "--port", str(port)]
            started.append((supervisor.start(name, argv, env, stage=_STAGE_CONTROLPLANE), url))
        for child, url in started:
            supervisor.wait_ready(child, url + "/readyz", timeout=self.options.ready_timeout)
        # The admin commands (`ollamaflow backends list`, `apply`, ...) find the cluster here.
        self.data.controlplane_url_file.write_text(started[0][1] + "\n")
        return [url for _, url in started]

    def _start_dataplanes(self, supervisor: Supervisor, nats_url: str) -> list[tuple[Child, str]]:
        started = []
        for index, port in enumerate(self.ports, start=1):
            env = self._env(
                role="dataplane",
                OLLAMAFLOW_NATS_URL=nats_url,
                OLLAMAFLOW_SNAPSHOT_CACHE=str(self.data.snapshot_cache(index)),
                OLLAMAFLOW_DATAPLANE_ID=f"dataplane-{index}",
                **self.secrets,
                **self._ui_origins("OLLAMAFLOW_DATAPLANE_CORS_ORIGINS"),
            )
            argv = [*CLI, "dataplane", "--host", self.options.host, "--port", str(port)]
            if self.options.workers is not None:
                argv += ["--workers", str(self.options.workers)]
            stop_timeout = dataplane_stop_timeout(env, self.options.stop_timeout)
            child = supervisor.start(
                f"dataplane-{index}", argv, env, stage=_STAGE_DATAPLANES, stop_timeout=stop_timeout
            )
            started.append((child, f"http://{_url_host(self.local_host)}:{port}"))
        return started

    def _print_ready(
        self,
        controlplane_urls: list[str],
        dataplane_urls: list[str],
        database_url: str,
        nats_url: str,
        token: str,
        token_source: str,
    ) -> None:
        for url in dataplane_urls:
            self.say(f"data plane:    {url}  (Ollama API /api/*, OpenAI API /v1/*)")
        for url in controlplane_urls:
            self.say(f"control plane: {url}  (admin API /v1.0/*, web console {url}/console)")
        if token_source.startswith("from "):
            self.say(f"admin token:   {token_source}")
        else:
            self.say(f"admin token:   {token}  ({token_source})")
        pg_note = "" if self.options.database_url else " (embedded)"
        nats_note = "" if self.options.nats_url else " (embedded; users controlplane and dataplane)"
        self.say(f"postgres:      {_hide_password(database_url)}{pg_note}")
        self.say(f"nats:          {nats_url}{nats_note}")
        self.say(f"data dir:      {self.data.root}")
        if self.secrets:
            self.say(f"secrets key:   {self.secrets['OLLAMAFLOW_SECRETS_KEY_FILE']}  (seals backend secrets)")

    def _print_logs(self, supervisor: Supervisor) -> None:
        logs = [(server.name, server.log_path) for server in self.embedded]
        logs += [(child.name, child.log_path) for child in supervisor.children if not child.expected_exit]
        for name, path in logs:
            self.say(f"log:           {path}  ({name})")

    def _watch(self, supervisor: Supervisor, sims: list[Child]) -> int:
        """Keep everything running: the parts of the cluster with backoff and a crash-loop limit, the
        simulated backends (backends, not parts) after a pause, for as long as it takes."""
        watch = Watch(self.printer, self.stop)
        backends = {child.name for child in sims}
        for server in self.embedded:
            watch.add(ServerUnit(server), PART_POLICY)
        for child in supervisor.children:
            if not child.expected_exit:
                policy = BACKEND_POLICY if child.name in backends else PART_POLICY
                watch.add(ChildUnit(supervisor, child), policy)
        return watch.run()


def _namespace(environ: Mapping[str, str]) -> str:
    """The bus namespace the planes will use (OLLAMAFLOW_BUS_NAMESPACE, or from their config file)."""
    try:
        return load_dataplane_settings(environ=environ).bus_namespace
    except ConfigError:  # the data plane itself will say what is wrong
        return DataPlaneSettings().bus_namespace


def _revision(response: httpx.Response) -> int:
    """The snapshot revision a data plane's /readyz reports (0 when it says none)."""
    try:
        revision = response.json().get("revision")
    except ValueError:
        return 0
    return revision if isinstance(revision, int) else 0


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _hide_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    credentials, at, location = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    return f"{scheme}{sep}{credentials.split(':', 1)[0]}:***@{location}"
