"""Browser tests of the web console: headless Chromium driven by Playwright, against a real cluster
(control plane on PostgreSQL and NATS, a data plane, simulated Ollama backends).

Playwright drives the system's Chromium (never a browser of its own download): ``/usr/bin/chromium``
(Debian's package, which ``make test`` installs when it can), or ``OLLAMAFLOW_CHROMIUM``. Without one
the tests skip, saying so; under CI (``CI=true``) a missing browser fails them instead.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from controlplane.migrate import upgrade
from controlplane.settings import Settings
from dataplane.settings import DataPlaneSettings
from ollamaflow.sim import running_sim
from tests.controlplane.harness import RunningControlPlane, eventually, fresh_database, running_controlplane
from tests.dataplane.harness import RunningDataPlane, running_dataplane
from tests.support.secrets import TEST_KEYRING
from tests.support.signing import SnapshotKeys

TOKEN = "console-admin-token"


def chromium_path() -> str | None:
    """The Chromium to drive: ``OLLAMAFLOW_CHROMIUM``, else the system's."""
    candidates = (
        os.environ.get("OLLAMAFLOW_CHROMIUM"),
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    )
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def _no_browser(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"{reason}; CI must run the browser tests")
    pytest.skip(reason)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    """One headless Chromium for the module's tests (each test opens its own context)."""
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        _no_browser("Python Playwright is not installed (pip install -e '.[dev]')")
    executable = chromium_path()
    if executable is None:
        _no_browser(
            "no Chromium at /usr/bin/chromium: install Debian's chromium (make test does, as root) "
            "or set OLLAMAFLOW_CHROMIUM"
        )
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


@dataclass
class ConsoleCluster:
    plane: RunningControlPlane
    settings: Settings
    dataplane: RunningDataPlane
    sims: list[str]  # simulator URLs
    admin: httpx.AsyncClient

    @property
    def url(self) -> str:
        return self.plane.url


@pytest.fixture(scope="module")
def console_database(database_url: str) -> Iterator[str]:
    with fresh_database(database_url) as url:
        upgrade(url)
        yield url


@pytest.fixture(scope="module")
async def cluster(
    console_database: str, nats_url: str, snapshot_keys: SnapshotKeys
) -> AsyncIterator[ConsoleCluster]:
    """A leading control plane that probes fast, a data plane, and two simulators nobody uses yet."""
    namespace = "t" + uuid.uuid4().hex[:12]
    settings = Settings(
        database_url=console_database,
        admin_tokens=(TOKEN,),
        nats_url=nats_url,
        bus_namespace=namespace,
        replica_id="cp-console-1",
        health_interval=0.2,
        health_timeout=1.0,
        inventory_interval=0.3,
        sync_retry_delay=0.1,
        sync_max_attempts=2,
        secrets=TEST_KEYRING,
        snapshot_signing_key_file=snapshot_keys.private,
    )
    dp_settings = DataPlaneSettings(
        snapshot_public_key_files=(snapshot_keys.public,),
        nats_url=nats_url,
        bus_namespace=namespace,
        dataplane_id="dp-console",
        report_interval=0.3,
        snapshot_poll_interval=0.5,
        secrets=TEST_KEYRING,
    )
    async with AsyncExitStack() as stack:
        # Paced, so that a pull shows progress for a moment between its first and last line.
        sims = [
            await stack.enter_async_context(running_sim(models=("llama3.2:latest",), tokens_per_second=4))
            for _ in range(2)
        ]
        plane = stack.enter_context(running_controlplane(settings))
        dataplane = await stack.enter_async_context(running_dataplane(dp_settings))
        admin = await stack.enter_async_context(
            httpx.AsyncClient(base_url=plane.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        )

        async def reported() -> bool:
            return bool((await admin.get("/v1.0/dataplanes")).json())

        await eventually(reported, within=15, what="the data plane's first report")
        yield ConsoleCluster(plane, settings, dataplane, sims, admin)
