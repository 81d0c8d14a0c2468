"""The pure snapshot builder: configuration rows in, snapshot content out."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import pytest

from controlplane.publish.builder import backend_base_url, build_content
from shared.secret_box import BackendSecrets, SealError, open_secrets, seal_secrets
from shared.snapshot import (
    BackendShare,
    ClusterView,
    DataPlaneView,
    SnapshotContent,
    accept,
    content_hash,
    decode,
    encode,
    seal,
)
from tests.support.secrets import TEST_KEYRING
from tests.support.signing import fixed_trust, sign_for_tests

assert TEST_KEYRING.current is not None
SEAL = functools.partial(seal_secrets, TEST_KEYRING.current)


@dataclass
class Frontend:
    identifier: str
    name: str | None = None
    hostname: str = "*"
    load_balancing: str = "RoundRobin"
    backends: list[str] = field(default_factory=list)
    required_models: list[str] = field(default_factory=list)
    timeout_ms: int = 60000
    max_request_body_size: int = 536870912
    use_sticky_sessions: bool = False
    sticky_session_expiration_ms: int = 1800000
    pinned_embeddings_properties: dict[str, Any] = field(default_factory=dict)
    pinned_completions_properties: dict[str, Any] = field(default_factory=dict)
    allow_embeddings: bool = True
    allow_completions: bool = True
    allow_retries: bool = True
    active: bool = True
    sticky_headers: list[str] = field(default_factory=lambda: ["x-conversation-id", "x-thread-id"])
    queue_size: int = 128
    queue_timeout_ms: int = 30000
    allow_model_management: bool = False
    model_management_requires_key: bool = False
    pull_adds_required_models: bool = False
    allow_route_explain: bool = False
    block_http10: bool = True
    require_api_keys: bool = False


@dataclass
class ApiKey:
    identifier: str
    key_sha256: str
    frontends: list[str] = field(default_factory=list)
    allow_model_management: bool = False
    rate_limit_requests_per_second: float = 0.0
    active: bool = True


@dataclass
class Backend:
    identifier: str
    name: str | None = None
    hostname: str = "localhost"
    port: int = 8000
    ssl: bool = False
    api_format: str = "Ollama"
    active: bool = True
    labels: list[str] = field(default_factory=list)
    max_parallel_requests: int = 4
    rate_limit_requests_threshold: int = 10
    allow_embeddings: bool = True
    allow_completions: bool = True
    pinned_embeddings_properties: dict[str, Any] = field(default_factory=dict)
    pinned_completions_properties: dict[str, Any] = field(default_factory=dict)
    bearer_token: str | None = None
    querystring: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@pytest.mark.parametrize(
    ("hostname", "port", "ssl", "url"),
    [
        ("localhost", 11434, False, "http://localhost:11434"),
        ("gpu.example", 443, True, "https://gpu.example:443"),
        ("::1", 8000, False, "http://[::1]:8000"),
        ("[fe80::1]", 80, False, "http://[fe80::1]:80"),
    ],
)
def test_base_url(hostname: str, port: int, ssl: bool, url: str) -> None:
    assert backend_base_url(hostname, port, ssl) == url


def test_rows_become_views_with_every_routing_field() -> None:
    frontend = Frontend(
        identifier="f1",
        name="one",
        hostname="a.test",
        load_balancing="Random",
        backends=["b2", "b1"],
        required_models=["llama3"],
        use_sticky_sessions=True,
        pinned_completions_properties={"options": {"num_ctx": 4096}},
        allow_retries=False,
        active=False,
    )
    backend = Backend(
        identifier="b1",
        hostname="10.0.0.1",
        port=11434,
        api_format="OpenAI",
        labels=["eu"],
        bearer_token="tok",
        querystring="k=v",
        headers={"X-A": "1"},
        active=False,
    )
    content = build_content(
        [frontend],
        [backend, Backend(identifier="b2", name="two")],
        ["dp2", "dp1", "dp2"],
        seal=SEAL,
    )

    (view,) = content.frontends
    assert (view.id, view.name, view.hostname, view.load_balancing) == ("f1", "one", "a.test", "Random")
    assert view.backends == ("b2", "b1")  # order is the frontend's: it may matter for routing
    assert view.required_models == ("llama3",)
    assert view.pinned_completions_properties == {"options": {"num_ctx": 4096}}
    assert (view.use_sticky_sessions, view.allow_retries, view.active) == (True, False, False)

    b1, b2 = content.backends
    assert (b1.base_url, b1.api_format, b1.labels, b1.active, b1.healthy) == (
        "http://10.0.0.1:11434",
        "OpenAI",
        ("eu",),
        False,
        True,
    )
    # Secrets travel sealed only, never in clear.
    assert (b1.bearer_token, b1.querystring, b1.headers, b1.secrets_withheld) == (None, None, {}, False)
    assert open_secrets(TEST_KEYRING, "b1", b1.sealed_secrets) == BackendSecrets(
        bearer_token="tok", querystring="k=v", headers={"X-A": "1"}
    )
    assert "tok" not in b1.sealed_secrets and b2.sealed_secrets == ""
    assert (b2.name, b2.bearer_token, b2.querystring) == ("two", None, None)
    assert [d.id for d in content.cluster.dataplanes] == ["dp1", "dp2"]


def test_equal_state_gives_equal_hashes_whatever_the_row_order() -> None:
    rows = [Backend(identifier="b1"), Backend(identifier="b2")]
    one = build_content([Frontend("f1"), Frontend("f2")], rows, ["x"])
    two = build_content([Frontend("f2"), Frontend("f1")], list(reversed(rows)), ["x"])
    assert content_hash(one) == content_hash(two)
    assert content_hash(one) != content_hash(build_content([Frontend("f1")], rows, ["x"]))


def test_built_content_survives_the_wire() -> None:
    content = build_content([Frontend("f1", backends=["b1"])], [Backend("b1")], [])
    snapshot = seal(content, revision=1, generated_at="2030-01-01T00:00:00Z")
    assert decode(encode(snapshot)) == snapshot


def test_frontend_routing_settings_reach_the_view() -> None:
    frontend = Frontend(
        "f1", load_balancing="ModelAware", sticky_headers=["x-user"], queue_size=0, queue_timeout_ms=500
    )
    (view,) = build_content([frontend], [], []).frontends
    assert (view.load_balancing, view.sticky_headers) == ("ModelAware", ("x-user",))
    assert (view.queue_size, view.queue_timeout_ms) == (0, 500)


def test_live_data_planes_carry_their_shares_of_every_backend() -> None:
    backends = [
        Backend("b1", max_parallel_requests=10, rate_limit_requests_threshold=4),
        Backend("b0", max_parallel_requests=1, rate_limit_requests_threshold=2),
    ]
    content = build_content([], backends, ["dp2", "dp1"], demand={"dp1": {"b1": 40}, "gone": {"b1": 9}})
    one, two = content.cluster.dataplanes
    assert (one.id, two.id) == ("dp1", "dp2")
    assert list(one.shares) == ["b0", "b1"]  # sorted, so the content hash is stable
    assert (one.shares["b1"].max_parallel, two.shares["b1"].max_parallel) == (9, 1)
    assert one.shares["b1"].rate_per_second == 3.6 and two.shares["b1"].rate_per_second == 0.4
    assert one.shares["b0"].max_parallel + two.shares["b0"].max_parallel == 1

    # The published shares are kept while the demand moves a little.
    kept = build_content(
        [],
        backends,
        ["dp1", "dp2"],
        demand={"dp1": {"b1": 30}},
        previous_shares={d.id: d.shares for d in content.cluster.dataplanes},
    )
    assert content_hash(kept) == content_hash(content)


def test_a_sealed_snapshot_passes_its_own_hash_check_even_with_ints_in_float_fields() -> None:
    # msgspec does not convert on construction: an int in a float field would encode as "5", decode
    # as 5.0 and re-encode as "5.0", so every data plane would reject the snapshot's hash.
    share = BackendShare(max_parallel=2, rate_per_second=5)  # type: ignore[arg-type]
    content = SnapshotContent(cluster=ClusterView(dataplanes=(DataPlaneView(id="dp", shares={"b": share}),)))
    sealed = seal(content, revision=3, generated_at="2030-01-01T00:00:00Z")
    accepted = accept(None, encode(sign_for_tests(sealed)), trust=fixed_trust())
    assert accepted.content.cluster.dataplanes[0].shares["b"].rate_per_second == 5.0


def test_frontend_access_settings_reach_the_view() -> None:
    frontend = Frontend(
        "f1",
        allow_model_management=True,
        model_management_requires_key=True,
        pull_adds_required_models=True,
        allow_route_explain=True,
        block_http10=False,
        require_api_keys=True,
    )
    (view,) = build_content([frontend], [], []).frontends
    assert (view.allow_model_management, view.model_management_requires_key) == (True, True)
    assert (view.pull_adds_required_models, view.allow_route_explain) == (True, True)
    assert (view.block_http10, view.require_api_keys) == (False, True)
    (default,) = build_content([Frontend("f2")], [], []).frontends
    assert not any((default.allow_model_management, default.allow_route_explain, default.require_api_keys))
    assert default.block_http10


def test_active_api_keys_go_out_as_digests_with_their_rates_split_over_the_data_planes() -> None:
    keys = [
        ApiKey("k2", "d" * 64, frontends=["f1"], rate_limit_requests_per_second=10),
        ApiKey("k1", "c" * 64, frontends=["f1", "f2"], allow_model_management=True),
        ApiKey("off", "e" * 64, active=False, rate_limit_requests_per_second=5),
    ]
    admins = ["b" * 64, "a" * 64]
    content = build_content(
        [], [], ["dp1", "dp2"], api_keys=keys, key_demand={"dp1": {"k2": 30}}, admin_token_digests=admins
    )
    assert [(k.id, k.digest, k.frontends) for k in content.api_keys] == [
        ("k2", "d" * 64, ("f1",)),
        ("k1", "c" * 64, ("f1", "f2")),
    ]
    assert content.api_keys[1].allow_model_management
    assert content.cluster.admin_token_digests == ("a" * 64, "b" * 64)
    one, two = content.cluster.dataplanes
    assert set(one.key_rates) == set(two.key_rates) == {"k2"}  # only limited keys are split
    assert one.key_rates["k2"] > two.key_rates["k2"] > 0  # dp1 uses it; dp2 keeps a floor
    assert one.key_rates["k2"] + two.key_rates["k2"] <= 10
    sealed = seal(content, revision=1, generated_at="2030-01-01T00:00:00Z")
    assert decode(encode(sealed)) == sealed
    # Kept while the demand moves a little.
    kept = build_content(
        [],
        [],
        ["dp2", "dp1"],
        api_keys=list(reversed(keys)),
        key_demand={"dp1": {"k2": 25}},
        previous_key_rates={d.id: d.key_rates for d in content.cluster.dataplanes},
        admin_token_digests=reversed(admins),
    )
    assert content_hash(kept) == content_hash(content)


def test_sealing_is_deterministic_and_bound_to_the_backend() -> None:
    """Equal rows give an equal content hash (the publisher skips unchanged content), and a sealed value
    copied to another backend does not open."""
    rows = [Backend(identifier="b1", bearer_token="tok", headers={"X-A": "1"}), Backend(identifier="b2")]
    first, again = build_content([], rows, seal=SEAL), build_content([], rows, seal=SEAL)
    assert content_hash(first) == content_hash(again)
    changed = build_content(
        [], [Backend(identifier="b1", bearer_token="tok2", headers={"X-A": "1"})], seal=SEAL
    )
    assert changed.backends[0].sealed_secrets != first.backends[0].sealed_secrets
    with pytest.raises(SealError, match="fail authentication"):
        open_secrets(TEST_KEYRING, "b2", first.backends[0].sealed_secrets)


def test_without_a_secrets_key_secrets_are_withheld_never_clear() -> None:
    rows = [Backend(identifier="b1", querystring="api_key=k"), Backend(identifier="b2")]
    b1, b2 = build_content([], rows).backends
    assert (b1.querystring, b1.sealed_secrets, b1.secrets_withheld) == (None, "", True)
    assert b2.secrets_withheld is False
