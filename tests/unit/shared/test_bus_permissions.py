"""The per-role allow lists follow ``BusNames``: every name has a role that may use it, and the NATS
configuration ``up`` writes and ``deploy/nats.conf`` both come from the same lists."""

from __future__ import annotations

import re
from pathlib import Path

from ollamaflow.nats_config import NatsUser, env_password, literal_password, render_authorization
from shared.bus import BusNames
from shared.bus_permissions import ROLES, permissions, stream_of_bucket

NAMES = BusNames("ns1")
# Names inside the KV bucket: covered by the bucket's own permissions.
IN_BUCKET = {"snapshot_key", "snapshot_pieces_keys", "lease_key"}


def _properties() -> dict[str, str]:
    return {
        name: getattr(NAMES, name)
        for name in dir(BusNames)
        if isinstance(getattr(BusNames, name), property) and name != "namespace"
    }


def test_every_bus_name_has_a_role_that_uses_it() -> None:
    lists = {role: permissions(NAMES, role) for role in ROLES}
    published = {s for p in lists.values() for s in p.publish}
    subscribed = {s for p in lists.values() for s in p.subscribe}
    for name, value in _properties().items():
        if name in IN_BUCKET:
            continue
        if name.endswith("_subject"):
            assert value in published, f"nobody may publish on {name}"
            assert value in subscribed, f"nobody may subscribe to {name}"
        elif name in ("bucket", "bucket_stream"):
            stream = stream_of_bucket(NAMES.bucket)
            assert name == "bucket" or value == stream
            for role, allowed in lists.items():
                assert any(stream in s for s in allowed.publish), f"{role} cannot reach {name}"
        else:
            raise AssertionError(
                f"BusNames.{name} is new to shared.bus_permissions: give it to the roles that use it, "
                "then teach this test its kind"
            )


def test_only_the_control_plane_writes_the_bucket() -> None:
    cp, dp = permissions(NAMES, "controlplane"), permissions(NAMES, "dataplane")
    assert "$KV.ns1.>" in cp.publish
    assert not any(s.startswith("$KV.") for s in dp.publish)
    streams = [s for s in dp.publish if s.startswith("$JS.API.STREAM.")]
    assert streams == ["$JS.API.STREAM.NAMES", "$JS.API.STREAM.INFO.KV_ns1", "$JS.API.STREAM.MSG.GET.KV_ns1"]
    assert NAMES.pulls_subject not in dp.publish and NAMES.explain_subject not in dp.publish
    assert NAMES.models_subject not in dp.subscribe
    # Nothing beyond the namespace: no wildcard that reaches another cluster's names.
    lookups = ("$JS.API.INFO", "$JS.API.STREAM.NAMES")
    for allowed in (cp, dp):
        for subject in (*allowed.publish, *allowed.subscribe):
            assert subject in lookups or "ns1" in subject


def test_the_rendered_config_names_every_allowed_subject_and_no_anonymous_user() -> None:
    users = [
        NatsUser("controlplane", "controlplane", literal_password('p"w')),
        NatsUser("dataplane", "dataplane", env_password("DP_PASSWORD")),
    ]
    text = render_authorization(NAMES, users)
    for role in ROLES:
        for subject in (*permissions(NAMES, role).publish, *permissions(NAMES, role).subscribe):
            assert f'"{subject}"' in text
    assert 'password: "p\\"w"' in text and "password: $DP_PASSWORD" in text
    assert "no_auth_user" not in text


def test_deploy_nats_conf_holds_the_generated_permissions(repo_root: Path) -> None:
    """deploy/nats.conf is `ollamaflow nats-config --env-passwords` for the default namespace: regenerate
    it with that command when the names change."""
    deployed = (repo_root / "deploy" / "nats.conf").read_text()
    users = [
        NatsUser("controlplane", "controlplane", env_password("OLLAMAFLOW_NATS_CONTROLPLANE_PASSWORD")),
        NatsUser("dataplane", "dataplane", env_password("OLLAMAFLOW_NATS_DATAPLANE_PASSWORD")),
    ]
    block = render_authorization(BusNames(), users)
    assert block in deployed, "deploy/nats.conf is stale: regenerate its authorization block"
    assert re.search(r"^\s*no_auth_user", deployed, re.M) is None
