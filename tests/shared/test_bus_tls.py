"""TLS to NATS is one setting away: a server with a certificate from a private CA, and planes that
trust that CA through OLLAMAFLOW_NATS_CA_FILE (or refuse the server without it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from ollamaflow.embedded import EmbeddedNats
from shared.bus import Bus, BusNames
from shared.bus_connect import BusLogin, connect_options
from shared.errors import BusError, ConfigError


@pytest.fixture(scope="module")
def tls_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A NATS that speaks TLS only, and the CA file that signed its certificate."""
    folder = tmp_path_factory.mktemp("natstls")
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    ca_file, cert, key = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    for blob in issued.cert_chain_pems:
        blob.write_to_path(str(cert), append=True)
    issued.private_key_pem.write_to_path(str(key))
    config = folder / "tls.conf"
    config.write_text(f'tls {{\n  cert_file: "{cert}"\n  key_file: "{key}"\n}}\n')
    server = EmbeddedNats(folder / "nats", config_file=config)
    url = server.start()
    try:
        yield url.replace("nats://", "tls://"), ca_file
    finally:
        server.stop()


async def test_a_plane_given_the_ca_talks_tls_to_nats(tls_nats: tuple[str, Path]) -> None:
    url, ca_file = tls_nats
    bus = Bus(url, BusNames("tlstest"), login=BusLogin(ca_file=ca_file))
    await bus.connect()
    try:
        await bus.write_snapshot(b"over tls", last=None)
        assert (await bus.read_snapshot() or (b"", 0))[0] == b"over tls"
    finally:
        await bus.close()


async def test_without_the_ca_the_server_is_not_trusted(tls_nats: tuple[str, Path]) -> None:
    url, _ = tls_nats
    with pytest.raises(BusError, match=r"(?i)certificate"):
        await Bus(url, BusNames("tlstest")).connect()


def test_tls_settings_are_checked_at_start(tmp_path: Path) -> None:
    assert "tls" not in connect_options("nats://h:4222", BusLogin())
    assert "tls" in connect_options("tls://h:4222", BusLogin())
    with pytest.raises(ConfigError, match="OLLAMAFLOW_NATS_CA_FILE"):
        Bus("nats://h:4222", login=BusLogin(ca_file=tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="go together"):
        connect_options("nats://h:4222", BusLogin(cert_file=tmp_path / "cert.pem"))
