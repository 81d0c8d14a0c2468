"""Backends behind TLS (``Ssl: true``): both planes verify them by the shared policy (shared.tls).

A simulator serves https with a certificate from a throw-away CA. With the CA given as
OLLAMAFLOW_BACKEND_CA_FILE, the control plane probes it healthy and a data plane answers through
it; without, the probe fails and the data plane's request is refused with the verification error.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trustme

from controlplane.settings import Settings
from dataplane.settings import DataPlaneSettings
from ollamaflow.sim import running_sim
from shared.snapshot import BackendView
from tests.controlplane.conftest import TOKEN
from tests.controlplane.harness import eventually, running_controlplane
from tests.dataplane.conftest import bus, writer
from tests.dataplane.harness import SnapshotWriter, running_dataplane, serve_frontend
from tests.support.secrets import TEST_KEYRING
from tests.support.signing import public_key_beside

__all__ = ["bus", "writer"]  # the data-plane tests' bus and snapshot writer, as fixtures here


@dataclasses.dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A CA of the test's own and a certificate for 127.0.0.1 signed by it, as PEM files."""
    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    files = TlsFiles(folder / "ca.pem", folder / "cert.pem", folder / "key.pem")
    ca.cert_pem.write_to_path(str(files.ca))
    for blob in issued.cert_chain_pems:
        blob.write_to_path(str(files.cert), append=True)
    issued.private_key_pem.write_to_path(str(files.key))
    return files


@pytest.fixture
async def tls_sim(tls_files: TlsFiles) -> AsyncIterator[str]:
    async with running_sim(tls_cert=tls_files.cert, tls_key=tls_files.key) as url:
        assert url.startswith("https://127.0.0.1:")
        yield url


def _dataplane_settings(settings: Settings, ca_file: Path | None) -> DataPlaneSettings:
    # The control plane's signing key sits beside its public half (tests.support.signing).
    assert settings.snapshot_signing_key_file is not None
    return DataPlaneSettings(
        snapshot_public_key_files=(public_key_beside(settings.snapshot_signing_key_file),),
        nats_url=settings.nats_url,
        bus_namespace=settings.bus_namespace,
        dataplane_id="dp-" + uuid.uuid4().hex[:8],
        report_interval=0.2,
        snapshot_poll_interval=0.5,
        backend_ca_file=ca_file,
        secrets=TEST_KEYRING,
    )


CHAT = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": False}


async def test_a_tls_backend_is_probed_and_served_with_the_ca_given(
    monitoring: Settings, tls_files: TlsFiles, tls_sim: str
) -> None:
    cp_settings = dataclasses.replace(monitoring, backend_ca_file=tls_files.ca)
    with running_controlplane(cp_settings) as plane:
        async with (
            httpx.AsyncClient(
                base_url=plane.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
            ) as admin,
            running_dataplane(_dataplane_settings(monitoring, tls_files.ca)) as dp,
            httpx.AsyncClient(timeout=30) as client,
        ):
            port = int(tls_sim.rsplit(":", 1)[1])
            backend = {"Identifier": "tls", "Hostname": "127.0.0.1", "Port": port, "Ssl": True}
            assert (await admin.put("/v1.0/backends", json=backend)).status_code == 201
            frontend = {"Identifier": "f", "Hostname": "*", "Backends": ["tls"]}
            assert (await admin.put("/v1.0/frontends", json=frontend)).status_code == 201

            async def healthy() -> bool:
                health = (await admin.get("/v1.0/backends/tls/health")).json()
                return bool(health["Healthy"])

            await eventually(healthy, within=15, what="the https backend probed healthy")
            answered: list[httpx.Response] = []

            async def served() -> bool:
                answered.append(await client.post(dp.url + "/api/chat", json=CHAT))
                return answered[-1].status_code == 200

            await eventually(served, within=15, what="the data plane answers through the https backend")
            assert answered[-1].headers["x-ollamaflow-backend"] == "tls"
            assert answered[-1].json()["done"] is True


async def test_without_the_ca_neither_plane_trusts_the_backend(
    monitoring: Settings, tls_sim: str, writer: SnapshotWriter
) -> None:
    with running_controlplane(monitoring) as plane:
        async with httpx.AsyncClient(
            base_url=plane.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        ) as admin:
            port = int(tls_sim.rsplit(":", 1)[1])
            backend = {"Identifier": "tls", "Hostname": "127.0.0.1", "Port": port, "Ssl": True}
            assert (await admin.put("/v1.0/backends", json=backend)).status_code == 201
            health: dict[str, object] = {}

            async def probed() -> bool:
                health.update((await admin.get("/v1.0/backends/tls/health")).json())
                return bool(health["LastError"])

            await eventually(probed, within=15, what="the https backend probed")
            assert health["Healthy"] is False
            assert "CERTIFICATE_VERIFY_FAILED" in str(health["LastError"]).upper().replace(" ", "_")
    # The data plane, told the backend is healthy, refuses to talk to it unverified.
    async with (
        running_dataplane(_dataplane_settings(monitoring, None)) as dp,
        httpx.AsyncClient(timeout=30) as client,
    ):
        await serve_frontend(writer, dp, [BackendView(id="tls", base_url=tls_sim)])
        resp = await client.post(dp.url + "/api/chat", json=CHAT)
        assert resp.status_code == 502
        assert "TLS certificate failed verification" in resp.json()["error"]
