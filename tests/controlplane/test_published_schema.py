"""schemathesis against the OpenAPI schema a real control plane publishes, with a real data plane
reporting to it (route dry-runs ask one): no 5xx, every answer as the schema documents it (status,
content type, headers, body), every request the schema allows accepted (or refused for the state it
meets: 404, 409), Allow on 405 and OPTIONS.

The examples per operation are few, to stay within about a minute on two busy cores; every operation
is covered, and the coverage phase tries each field's boundaries (lengths, ranges, patterns).
"""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from controlplane.settings import Settings
from dataplane.settings import DataPlaneSettings
from tests.controlplane.conftest import TOKEN
from tests.controlplane.harness import eventually, running_controlplane
from tests.dataplane.harness import running_dataplane
from tests.support.secrets import TEST_KEYRING
from tests.support.signing import public_key_beside

pytestmark = pytest.mark.slow

# An endless NDJSON stream: schemathesis would wait for its end; it is checked on its own below.
_ENDLESS = "/v1.0/pulls/stream"


async def test_the_admin_api_answers_as_its_published_schema_says(settings: Settings, tmp_path: Path) -> None:
    dp_settings = DataPlaneSettings(
        nats_url=settings.nats_url,
        bus_namespace=settings.bus_namespace,
        dataplane_id="dp-" + uuid.uuid4().hex[:8],
        report_interval=0.5,
        secrets=TEST_KEYRING,
        snapshot_public_key_files=(public_key_beside(settings.snapshot_signing_key_file),),
    )
    with running_controlplane(dataclasses.replace(settings, dataplane_ttl=30.0)) as plane:
        async with (
            running_dataplane(dp_settings),
            httpx.AsyncClient(
                base_url=plane.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
            ) as admin,
        ):

            async def reported() -> bool:
                return bool((await admin.get("/v1.0/dataplanes")).json())

            await eventually(reported, within=15, what="the data plane's first report")
            async with admin.stream("GET", _ENDLESS) as stream:
                assert stream.status_code == 200
                assert stream.headers["content-type"] == "application/x-ndjson"

            command = [
                sys.executable,
                "-m",
                "schemathesis.cli",
                "run",
                f"{plane.url}/schema/openapi.json",
                "--header",
                f"Authorization: Bearer {TOKEN}",
                "--checks",
                "all",
                "--max-examples",
                "8",
                "--workers",
                "2",
                "--request-timeout",
                "10",
                "--exclude-path",
                _ENDLESS,
                "--generation-database",
                "none",
                "--no-color",
            ]
            run = await asyncio.to_thread(
                subprocess.run, command, cwd=tmp_path, capture_output=True, text=True, timeout=300
            )
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]
