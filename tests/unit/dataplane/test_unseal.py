"""Opening the snapshot's sealed backend secrets into memory (pure): what opens, what is refused."""

from __future__ import annotations

import secrets

from dataplane.routing.table import RoutingTable
from dataplane.state import secrets_problem
from dataplane.unseal import WITHHELD, open_backends
from shared.secret_box import BackendSecrets, load_keyring, seal_secrets
from shared.snapshot import BackendView, FrontendView, SnapshotContent, seal

RING = load_keyring(secrets.token_urlsafe(32))
SECRETS = BackendSecrets(bearer_token="tok", querystring="k=v", headers={"X-Api-Key": "h"})


def _snapshot(*backends: BackendView):  # type: ignore[no-untyped-def]
    frontend = FrontendView(id="f", backends=tuple(b.id for b in backends))
    return seal(SnapshotContent(frontends=(frontend,), backends=backends), revision=1, generated_at="x")


def _sealed(backend_id: str) -> BackendView:
    assert RING.current is not None
    text = seal_secrets(RING.current, backend_id, SECRETS)
    return BackendView(id=backend_id, base_url="http://127.0.0.1:1", sealed_secrets=text)


def test_sealed_secrets_open_into_the_clear_fields_and_are_reused() -> None:
    plain = BackendView(id="plain", base_url="http://127.0.0.1:2")
    # As an older control plane published it: in clear, still taken.
    legacy = BackendView(id="legacy", base_url="http://127.0.0.1:3", bearer_token="old")
    snapshot = _snapshot(_sealed("b1"), plain, legacy)
    opened, problems, memo = open_backends(snapshot, RING)
    b1, old, p = opened.content.backends  # sorted by id
    assert (b1.bearer_token, b1.querystring, b1.headers, b1.healthy) == (
        "tok",
        "k=v",
        {"X-Api-Key": "h"},
        True,
    )
    assert (p, old) == (plain, legacy) and problems == {}
    # The next snapshot with the same text is not opened again, even by a data plane that lost its key.
    again, problems, _ = open_backends(snapshot, load_keyring(), memo)
    assert again.content.backends[0].bearer_token == "tok" and problems == {}
    assert RoutingTable.build(opened).frontend_for("any").pools  # the backends are routable


def test_backends_that_cannot_be_opened_are_unhealthy_and_named() -> None:
    withheld = BackendView(id="w", base_url="http://127.0.0.1:1", secrets_withheld=True)
    snapshot = _snapshot(_sealed("b1"), _sealed("b2"), withheld)
    wrong = load_keyring(secrets.token_urlsafe(32))
    opened, problems, memo = open_backends(snapshot, wrong)
    assert memo == {} and set(problems) == {"b1", "b2", "w"} and problems["w"] == WITHHELD
    for backend in opened.content.backends:
        assert backend.healthy is False and backend.secrets_withheld is True and backend.bearer_token is None
    assert RoutingTable.build(opened).frontend_for("any").pools == {}
    line = secrets_problem(problems)
    assert "backends 'b1', 'b2' are not used" in line and "backends 'w' are not used" in line
    many = secrets_problem({f"b{i:02}": "why" for i in range(12)})
    assert many.count("'") == 10 and "and 7 more" in many
