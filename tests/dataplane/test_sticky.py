"""Sticky sessions, pure: the session key, rendezvous hashing, giving way, and the bounded memory."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter

from dataplane.routing.sticky import Sessions, by_weight, session_key, short_hash, sticky_order
from dataplane.routing.table import Pool, RequestKind, RoutingTable
from shared.snapshot import BackendView, FrontendView, SnapshotContent, seal

COMPLETIONS = RequestKind.COMPLETIONS
IDS = ("alpha", "bravo", "charlie", "delta")


def _content(ids: tuple[str, ...] = IDS, **frontend: object) -> SnapshotContent:
    backends = tuple(
        BackendView(id=i, base_url=f"http://{i}.test:11434", max_parallel_requests=2) for i in ids
    )
    view = FrontendView(id="f", backends=ids, use_sticky_sessions=True, **frontend)  # type: ignore[arg-type]
    return SnapshotContent(frontends=(view,), backends=backends)


def _table(content: SnapshotContent, revision: int = 1, previous: RoutingTable | None = None) -> RoutingTable:
    snapshot = seal(content, revision=revision, generated_at="2025-01-01T00:00:00Z")
    return RoutingTable.build(snapshot, previous=previous, rng=random.Random(1))


def _pool(ids: tuple[str, ...] = IDS) -> Pool:
    return _table(_content(ids)).frontend_for("x").pool(COMPLETIONS)


def _home(pool: Pool, key: str, **kw: object) -> str:
    return pool.order(pool.targets, sticky_key=key, **kw).order[0].id  # type: ignore[arg-type]


def test_the_key_is_the_first_configured_header_the_client_sent() -> None:
    names = (b"x-conversation-id", b"x-thread-id")
    headers = [(b"user-agent", b"x"), (b"x-thread-id", b"t1"), (b"x-conversation-id", b"c1")]
    assert session_key(headers, names) == "c1"  # the frontend's order, not the client's
    assert session_key([(b"x-conversation-id", b"  "), (b"x-thread-id", b"t1")], names) == "t1"
    assert session_key([(b"user-agent", b"x")], names) is None
    assert session_key([(b"x-thread-id", b"k" * 1000)], names) == "k" * 256


def test_a_sticky_frontend_reads_its_own_headers_lower_case() -> None:
    content = _content(sticky_headers=("X-Session",))
    assert _table(content).frontend_for("x").sticky_headers == (b"x-session",)
    plain = SnapshotContent(frontends=(FrontendView(id="f", backends=IDS),), backends=_content().backends)
    route = _table(plain).frontend_for("x")
    assert route.sticky_headers == () and route.pool(COMPLETIONS).sessions is None


def test_a_session_always_goes_to_the_same_backend() -> None:
    pool = _pool()
    homes = {key: _home(pool, key) for key in (f"conversation-{i}" for i in range(50))}
    for _ in range(3):
        assert {key: _home(pool, key) for key in homes} == homes
    decision = pool.order(pool.targets, sticky_key="conversation-1")
    assert decision.sticky == "home" and decision.sticky_key == "conversation-1"


def test_sessions_spread_evenly_over_the_backends() -> None:
    pool = _pool()
    counts = Counter(_home(pool, f"session-{i}") for i in range(4000))
    assert set(counts) == set(IDS)
    assert all(850 <= n <= 1150 for n in counts.values()), counts


def test_every_process_computes_the_same_homes() -> None:
    # Python's own hash() differs per process; the weights must not.
    keys = [f"k{i}" for i in range(30)]
    pool = _pool()
    here = {key: _home(pool, key) for key in keys}
    script = (
        "import json, sys\n"
        "from tests.dataplane.test_sticky import _home, _pool\n"
        "pool = _pool()\n"
        "print(json.dumps({k: _home(pool, k) for k in json.loads(sys.argv[1])}))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", script, json.dumps(keys)], capture_output=True, check=True, env=env, text=True
    )
    assert json.loads(out.stdout) == here


def test_only_the_sessions_of_a_backend_that_leaves_move() -> None:
    pool = _pool()
    keys = [f"s{i}" for i in range(400)]
    before = {key: _home(pool, key) for key in keys}
    without = _pool(("alpha", "bravo", "delta"))
    after = {key: _home(without, key) for key in keys}
    moved = {key for key in keys if before[key] != after[key]}
    assert moved == {key for key in keys if before[key] == "charlie"}
    # They move to their second choice, which every replica agrees on as well.
    for key in moved:
        assert after[key] == _ranking(pool, key)[1]


def _ranking(pool: Pool, key: str) -> list[str]:
    return [t.id for t in by_weight(pool.targets, key)]


def test_a_session_gives_way_when_its_backend_is_not_a_candidate() -> None:
    pool = _pool()
    ranking = _ranking(pool, "conv")
    rest = tuple(t for t in pool.targets if t.id != ranking[0])  # e.g. no model there, or wrong label
    assert pool.order(rest, sticky_key="conv").order[0].id == ranking[1]


def test_a_full_home_gives_way_and_the_session_stays_where_it_went_until_it_expires() -> None:
    pool = _pool()
    home, second, third = _ranking(pool, "conv")[:3]
    decision = pool.order(pool.targets, sticky_key="conv", in_flight={home: 2}, now=100.0)
    assert (decision.order[0].id, decision.sticky) == (second, "moved")
    assert [t.id for t in decision.order][-1] == home  # full: last resort
    # Home is free again, but the conversation stays on the backend it moved to.
    stayed = pool.order(pool.targets, sticky_key="conv", now=200.0)
    assert (stayed.order[0].id, stayed.sticky) == (second, "stayed")
    assert stayed.order[1].id == home
    # After the frontend's expiry (30 minutes by default) of inactivity it goes home.
    back = pool.order(pool.targets, sticky_key="conv", now=200.0 + 1800.5)
    assert (back.order[0].id, back.sticky) == (home, "home")
    # Were its fallback full as well, it takes the next by weight.
    pool.order(pool.targets, sticky_key="conv", in_flight={home: 2}, now=5000.0)
    again = pool.order(pool.targets, sticky_key="conv", in_flight={home: 2, second: 2}, now=5001.0)
    assert again.order[0].id == third


def test_when_the_fallback_is_gone_the_session_goes_home_and_the_move_is_forgotten() -> None:
    pool = _pool()
    home, second = _ranking(pool, "conv")[:2]
    pool.order(pool.targets, sticky_key="conv", in_flight={home: 2}, now=1.0)
    assert pool.sessions is not None and len(pool.sessions) == 1
    rest = tuple(t for t in pool.targets if t.id != second)
    assert pool.order(rest, sticky_key="conv", now=2.0).order[0].id == home
    assert len(pool.sessions) == 0


def test_a_dry_run_remembers_nothing() -> None:
    pool = _pool()
    home, second = _ranking(pool, "conv")[:2]
    peeked = pool.order(pool.targets, sticky_key="conv", in_flight={home: 2}, now=1.0, peek=True)
    assert peeked.order[0].id == second
    assert pool.sessions is not None and len(pool.sessions) == 0


def test_all_full_keeps_the_home_first() -> None:
    pool = _pool()
    ranking = _ranking(pool, "conv")
    decision = pool.order(pool.targets, sticky_key="conv", in_flight=dict.fromkeys(IDS, 2), now=1.0)
    assert [t.id for t in decision.order] == ranking and decision.sticky == "home"


def test_moved_sessions_survive_a_new_snapshot_with_its_expiry() -> None:
    first = _table(_content())
    pool = first.frontend_for("x").pool(COMPLETIONS)
    home, second = _ranking(pool, "conv")[:2]
    pool.order(pool.targets, sticky_key="conv", in_flight={home: 2}, now=0.0)
    second_table = _table(_content(sticky_session_expiration_ms=10_000), revision=2, previous=first)
    new_pool = second_table.frontend_for("x").pool(COMPLETIONS)
    assert new_pool.sessions is pool.sessions and new_pool.sessions is not None
    assert new_pool.sessions.ttl == 10.0
    assert _home(new_pool, "conv", now=5.0) == second
    assert _home(new_pool, "conv", now=20.0) == home  # 15 s idle > 10 s


def test_the_memory_is_bounded_and_expires_old_entries() -> None:
    sessions = Sessions(ttl=10.0, limit=3)
    for i in range(5):
        sessions.remember(f"k{i}", "b", float(i))
    assert len(sessions) == 3 and sessions.moved_to("k0", 4.0) is None
    assert sessions.moved_to("k4", 4.0) == "b"
    sessions.remember("late", "b", 100.0)  # the others are long idle: gone on the next insert
    assert len(sessions) == 1


def test_sticky_order_without_memory_still_gives_way() -> None:
    pool = _pool()
    home, second = _ranking(pool, "conv")[:2]
    order, why = sticky_order(pool.targets, "conv", {home: 5}, {home: 2}, None, 0.0)
    assert (order[0].id, why) == (second, "moved")


def test_the_short_hash_hides_the_key_and_is_stable() -> None:
    assert short_hash("conv") == short_hash("conv") != short_hash("conv2")
    assert len(short_hash("conv")) == 8 and "conv" not in short_hash("conv")
