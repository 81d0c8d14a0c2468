"""`ollamaflow keys` and `ollamaflow nats-config`."""

from __future__ import annotations

import stat
from pathlib import Path

from typer.testing import CliRunner

from ollamaflow.cli import app
from shared.bus import BusNames
from shared.bus_permissions import permissions
from shared.signing_keys import PRIVATE_KEY_NAME, PUBLIC_KEY_NAME, load_signer, load_trust


def test_keys_makes_a_pair_once_and_copies_the_public_half(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["keys", "--dir", str(tmp_path / "cp"), "--public-dir", str(tmp_path / "dp")]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    private = tmp_path / "cp" / PRIVATE_KEY_NAME
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    signer = load_signer(private)
    assert f"key id {signer.key_id}" in first.output
    assert f"OLLAMAFLOW_SNAPSHOT_SIGNING_KEY_FILE={private}" in first.output
    assert set(load_trust([tmp_path / "dp" / PUBLIC_KEY_NAME]).keys) == {signer.key_id}
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and f"key id {signer.key_id}" in again.output  # kept, not replaced


def test_nats_config_prints_the_roles_for_a_namespace() -> None:
    result = CliRunner().invoke(app, ["nats-config", "--namespace", "prod2"])
    assert result.exit_code == 0, result.output
    for role in ("controlplane", "dataplane"):
        for subject in permissions(BusNames("prod2"), role).publish:
            assert f'"{subject}"' in result.output
    assert "password: $OLLAMAFLOW_NATS_CONTROLPLANE_PASSWORD" in result.output
    assert "password: $OLLAMAFLOW_NATS_DATAPLANE_PASSWORD" in result.output
