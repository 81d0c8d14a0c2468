"""The routing table: host matching, eligibility and the two strategies, without any socket."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from dataplane.routing.table import RequestKind, RoutingTable, Target, normalize_host
from shared.errors import NoBackendAvailable, NoFrontendMatch, RequestNotAllowed
from shared.snapshot import BackendView, FrontendView, SnapshotContent, seal

COMPLETIONS = RequestKind.COMPLETIONS
EMBEDDINGS = RequestKind.EMBEDDINGS


def _backend(id: str, **kw: object) -> BackendView:
    return BackendView(id=id, base_url=f"http://{id}.test:11434", **kw)  # type: ignore[arg-type]


def _table(
    frontends: list[FrontendView],
    backends: list[BackendView],
    *,
    revision: int = 1,
    previous: RoutingTable | None = None,
    rng: random.Random | None = None,
) -> RoutingTable:
    content = SnapshotContent(frontends=tuple(frontends), backends=tuple(backends))
    snapshot = seal(content, revision=revision, generated_at="2025-01-01T00:00:00Z")
    return RoutingTable.build(snapshot, previous=previous, rng=rng)


THREE = [_backend("a"), _backend("b"), _backend("c")]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Example.COM", "example.com"),
        ("example.com:43411", "example.com"),
        ("[::1]:43411", "::1"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("example.com.", "example.com"),
        (" example.com ", "example.com"),
    ],
)
def test_normalize_host(raw: str, expected: str) -> None:
    assert normalize_host(raw) == expected


def test_host_match_is_exact_case_insensitive_and_ignores_the_port() -> None:
    table = _table(
        [
            FrontendView(id="f1", hostname="Chat.Example.com", backends=("a",)),
            FrontendView(id="f2", hostname="[::1]", backends=("b",)),
        ],
        THREE,
    )
    assert table.frontend_for("chat.example.com:8080").frontend.id == "f1"
    assert table.frontend_for("CHAT.EXAMPLE.COM").frontend.id == "f1"
    assert table.frontend_for("[::1]:43411").frontend.id == "f2"
    with pytest.raises(NoFrontendMatch):
        table.frontend_for("example.com")  # no suffix or wildcard matching
    with pytest.raises(NoFrontendMatch):
        table.frontend_for("")


def test_wildcard_frontend_catches_the_rest_and_inactive_ones_do_not_match() -> None:
    table = _table(
        [
            FrontendView(id="any", hostname="*", backends=("a",)),
            FrontendView(id="off", hostname="off.example.com", backends=("b",), active=False),
            FrontendView(id="on", hostname="on.example.com", backends=("c",)),
        ],
        THREE,
    )
    assert table.frontend_for("on.example.com").frontend.id == "on"
    assert table.frontend_for("off.example.com").frontend.id == "any"
    assert table.frontend_for("whatever:1").frontend.id == "any"

    no_wildcard = _table([FrontendView(id="any", hostname="*", backends=("a",), active=False)], THREE)
    with pytest.raises(NoFrontendMatch):
        no_wildcard.frontend_for("x")


def test_round_robin_rotates_exactly_in_frontend_order() -> None:
    table = _table([FrontendView(id="f", backends=("c", "a", "b"))], THREE)
    pool = table.frontend_for("x").pool(COMPLETIONS)
    assert [pool.pick().id for _ in range(7)] == ["c", "a", "b", "c", "a", "b", "c"]


def test_round_robin_counters_are_per_request_kind() -> None:
    # The original shared one counter across kinds, which skews both rotations.
    table = _table([FrontendView(id="f", backends=("a", "b"))], [_backend("a"), _backend("b")])
    route = table.frontend_for("x")
    picks = []
    for _ in range(4):
        picks.append(route.pool(COMPLETIONS).pick().id)
        route.pool(EMBEDDINGS).pick()
    assert picks == ["a", "b", "a", "b"]


def test_round_robin_position_survives_a_new_snapshot() -> None:
    frontends = [FrontendView(id="f", backends=("a", "b", "c"))]
    first = _table(frontends, THREE)
    pool = first.frontend_for("x").pool(COMPLETIONS)
    assert [pool.pick().id for _ in range(2)] == ["a", "b"]
    second = _table(frontends, THREE, revision=2, previous=first)
    assert second.frontend_for("x").pool(COMPLETIONS).pick().id == "c"


def test_random_is_roughly_uniform_with_a_seeded_rng() -> None:
    table = _table(
        [FrontendView(id="f", backends=("a", "b", "c"), load_balancing="Random")], THREE, rng=random.Random(7)
    )
    pool = table.frontend_for("x").pool(COMPLETIONS)
    counts = Counter(pool.pick().id for _ in range(3000))
    assert set(counts) == {"a", "b", "c"}
    assert all(850 <= n <= 1150 for n in counts.values()), counts


def test_inactive_unhealthy_and_unknown_backends_are_skipped() -> None:
    backends = [_backend("a", active=False), _backend("b", healthy=False), _backend("c")]
    table = _table([FrontendView(id="f", backends=("a", "b", "ghost", "c"))], backends)
    pool = table.frontend_for("x").pool(COMPLETIONS)
    assert {pool.pick().id for _ in range(5)} == {"c"}


def test_backends_that_forbid_a_kind_are_skipped_and_either_format_serves() -> None:
    backends = [
        _backend("chat-only", allow_embeddings=False),
        _backend("embed-only", allow_completions=False),
        _backend("openai", api_format="OpenAI", allow_embeddings=False),
    ]
    table = _table([FrontendView(id="f", backends=("chat-only", "embed-only", "openai"))], backends)
    route = table.frontend_for("x")
    assert {route.pool(COMPLETIONS).pick().id for _ in range(4)} == {"chat-only", "openai"}
    assert {route.pool(EMBEDDINGS).pick().id for _ in range(4)} == {"embed-only"}
    assert route.pool(COMPLETIONS).targets[1].api_format == "OpenAI"


def test_frontend_that_forbids_a_kind_refuses_it() -> None:
    table = _table([FrontendView(id="f", backends=("a",), allow_embeddings=False)], THREE)
    route = table.frontend_for("x")
    with pytest.raises(RequestNotAllowed) as caught:
        route.pool(EMBEDDINGS)
    assert caught.value.status == 403
    assert route.pool(COMPLETIONS).pick().id == "a"


def test_no_eligible_backend_is_an_error() -> None:
    table = _table([FrontendView(id="f", backends=("a",))], [_backend("a", healthy=False)])
    with pytest.raises(NoBackendAvailable) as caught:
        table.frontend_for("x").pool(COMPLETIONS)
    assert caught.value.status == 502
    assert "'f'" in caught.value.message


def test_failover_order_follows_the_rotation() -> None:
    table = _table([FrontendView(id="f", backends=("a", "b", "c"))], THREE)
    pool = table.frontend_for("x").pool(COMPLETIONS)
    assert [t.id for t in pool.order(pool.targets).order] == ["a", "b", "c"]
    assert [t.id for t in pool.order(pool.targets).order] == ["b", "c", "a"]


def test_targets_carry_prepared_request_heads() -> None:
    backend = BackendView(
        id="b",
        base_url="http://10.0.0.1:11434/",
        querystring="?key=v",
        headers={"X-Team": "blue", "Authorization": "Basic overridden"},
        bearer_token="tok",
    )
    table = _table([FrontendView(id="f", backends=("b",))], [backend])
    target = table.frontend_for("x").pool(COMPLETIONS).pick()
    assert (target.http.origin.host, target.http.origin.port, target.http.origin.tls) == (
        "10.0.0.1",
        11434,
        False,
    )
    assert target.head(b"POST", b"/api/chat", b"", b"", 7) == (
        b"POST /api/chat?key=v HTTP/1.1\r\nHost: 10.0.0.1:11434\r\n"
        b"X-Team: blue\r\nAuthorization: Bearer tok\r\nContent-Length: 7\r\n\r\n"
    )
    head = target.head(b"POST", b"/api/chat", b"a=1", b"user-agent: x\r\n", 0)
    assert head.startswith(b"POST /api/chat?a=1&key=v HTTP/1.1\r\n")
    assert head.endswith(b"user-agent: x\r\nContent-Length: 0\r\n\r\n")
    assert dict(target.headers) == {"X-Team": "blue", "Authorization": "Bearer tok"}
    assert target.header_names == {b"x-team", b"authorization"}
    assert target.backend_header == (b"x-ollamaflow-backend", b"b")


@pytest.mark.parametrize(
    ("base_url", "host", "port", "tls", "host_line", "path"),
    [
        ("http://sim.test", "sim.test", 80, False, b"Host: sim.test\r\n", b"/api/chat"),
        ("https://api.test/v1/", "api.test", 443, True, b"Host: api.test\r\n", b"/v1/api/chat"),
        ("http://[::1]:8080", "::1", 8080, False, b"Host: [::1]:8080\r\n", b"/api/chat"),
    ],
)
def test_origins_and_host_lines(
    base_url: str, host: str, port: int, tls: bool, host_line: bytes, path: bytes
) -> None:
    target = Target.from_backend(BackendView(id="b", base_url=base_url))
    assert (target.http.origin.host, target.http.origin.port, target.http.origin.tls) == (host, port, tls)
    assert not target.http.origin.invalid
    head = target.head(b"POST", b"/api/chat", b"", b"", 0)
    assert head.startswith(b"POST " + path + b" HTTP/1.1\r\n" + host_line)


def test_unusable_urls_and_headers_are_caught_when_the_snapshot_arrives() -> None:
    assert Target.from_backend(BackendView(id="b", base_url="ftp://x")).http.origin.invalid
    assert Target.from_backend(BackendView(id="b", base_url="http://x:99999")).http.origin.invalid
    target = Target.from_backend(
        BackendView(
            id="b", base_url="http://x", headers={"X-Ok": "1", "X-Bad": "a\r\nInjected: 1", "Bad Name": "v"}
        )
    )
    assert target.http.fixed_lines == b"Host: x\r\nX-Ok: 1\r\n"


def test_empty_table_matches_nothing() -> None:
    with pytest.raises(NoFrontendMatch):
        RoutingTable().frontend_for("x")


def test_a_new_snapshot_keeps_what_did_not_change_and_rebuilds_what_did() -> None:
    frontends = [
        FrontendView(id="f1", hostname="one.test", backends=("a", "b")),
        FrontendView(id="f2", hostname="two.test", backends=("c",)),
        FrontendView(id="f3", hostname="three.test", backends=("b", "d")),
    ]
    first = _table(frontends, [*THREE, _backend("d")])
    f1, f2, f3 = (first.frontend_for(h) for h in ("one.test", "two.test", "three.test"))
    f1.pool(COMPLETIONS).pick()  # moves its rotation

    # c gains a model, d is removed: f1 (a, b) is kept whole, f2 and f3 are rebuilt.
    second = _table(
        frontends,
        [*THREE[:2], _backend("c", models=("m:latest",), models_known=True)],
        revision=2,
        previous=first,
    )
    assert second.frontend_for("one.test") is f1
    assert second.targets["a"] is first.targets["a"] and second.targets["c"] is not first.targets["c"]
    rebuilt_two = second.frontend_for("two.test")
    assert rebuilt_two is not f2 and rebuilt_two.pool(COMPLETIONS).choices("m") == (second.targets["c"],)
    rebuilt_three = second.frontend_for("three.test")
    assert rebuilt_three is not f3 and [t.id for t in rebuilt_three.pool(COMPLETIONS).targets] == ["b"]

    # A changed frontend is rebuilt, its rotation carried over.
    turned = [
        FrontendView(id="f1", hostname="one.test", backends=("a", "b"), allow_retries=False),
        *frontends[1:],
    ]
    third = _table(
        turned,
        [*THREE[:2], _backend("c", models=("m:latest",), models_known=True)],
        revision=3,
        previous=second,
    )
    route = third.frontend_for("one.test")
    assert route is not f1 and not route.frontend.allow_retries
    assert route.pool(COMPLETIONS).turn == f1.pool(COMPLETIONS).turn == 1
