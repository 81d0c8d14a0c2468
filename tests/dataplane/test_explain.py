"""Explainable routing, pure: the X-OllamaFlow-Route header and the dry-run reply."""

from __future__ import annotations

import random

from dataplane.explain import MAX_HEADER, dry_run, route_header
from dataplane.routing import RequestKind, RoutingTable
from dataplane.sticky import short_hash
from shared.snapshot import BackendView, FrontendView, LoadedModel, SnapshotContent, seal
from shared.wire.explain import ExplainRequest

COMPLETIONS = RequestKind.COMPLETIONS


def _backend(id: str, *, loaded: tuple[str, ...] = (), **kw: object) -> BackendView:
    options: dict[str, object] = {"models": ("llama3:latest",), "models_known": True, **kw}
    return BackendView(
        id=id,
        base_url=f"http://{id}.test:11434",
        max_parallel_requests=2,
        models_loaded=tuple(LoadedModel(name=n) for n in loaded),
        **options,  # type: ignore[arg-type]
    )


def _table(*frontends: FrontendView, backends: list[BackendView] | None = None) -> RoutingTable:
    backends = backends or [_backend("a"), _backend("b", loaded=("llama3",)), _backend("c")]
    content = SnapshotContent(frontends=frontends, backends=tuple(backends))
    snapshot = seal(content, revision=7, generated_at="2025-01-01T00:00:00Z")
    return RoutingTable.build(snapshot, rng=random.Random(1))


def _limit(backend_id: str) -> int:
    return 2


def test_the_header_names_strategy_candidates_choice_and_what_happened() -> None:
    table = _table(FrontendView(id="f", backends=("a", "b", "c"), load_balancing="ModelAware"))
    pool = table.frontend_for("x").pool(COMPLETIONS)
    in_flight = {"a": 1, "c": 2}
    decision = pool.order(pool.choices("llama3"), model="llama3", in_flight=in_flight)
    name, value = route_header(
        decision,
        in_flight=in_flight,
        limit_of=_limit,
        served=decision.order[1],
        failed=[decision.order[0]],
        queued_ms=12,
    )
    assert name == b"x-ollamaflow-route"
    assert value == (
        b"strategy=ModelAware; candidates=b[0/2 warm],a[1/2],c[2/2 full]; chosen=b; served=a; failed=b; "
        b"queued_ms=12"
    )


def test_the_header_shows_the_session_hash_not_the_key_and_stays_one_bounded_line() -> None:
    table = _table(FrontendView(id="f", backends=("a", "b", "c"), use_sticky_sessions=True))
    pool = table.frontend_for("x").pool(COMPLETIONS)
    decision = pool.order(pool.targets, sticky_key="secret-conversation")
    _, value = route_header(decision, in_flight={}, limit_of=_limit, served=decision.order[0])
    text = value.decode()
    assert text.startswith("strategy=Sticky; ")
    assert f"sticky={short_hash('secret-conversation')} home" in text and "secret" not in text
    odd = _table(
        FrontendView(id="f", backends=("x;y\r\n", *(f"b{i}" * 30 for i in range(100)))),
        backends=[_backend("x;y\r\n"), *(_backend(f"b{i}" * 30) for i in range(100))],
    )
    pool = odd.frontend_for("x").pool(COMPLETIONS)
    _, value = route_header(pool.order(pool.targets), in_flight={}, limit_of=_limit, served=None)
    assert b"\r" not in value and b"\n" not in value and b"x?y??[0/2]" in value
    assert len(value) <= MAX_HEADER


def _ask(table: RoutingTable, **request: object) -> dict[str, object]:
    reply = dry_run(
        table,
        ExplainRequest(**request),  # type: ignore[arg-type]
        dataplane="dp-1",
        in_flight={"a": 2},
        limit_of=_limit,
        ejected={},
    )
    return {
        "status": reply.status,
        "error": reply.error,
        "order": reply.order,
        "why": {c.backend: (c.eligible, c.reason, c.in_flight, c.limit, c.loaded) for c in reply.candidates},
        "reply": reply,
    }


def test_a_dry_run_explains_every_backend_of_the_frontend() -> None:
    backends = [
        _backend("a"),
        _backend("b", loaded=("llama3",)),
        _backend("c", models=("qwen2.5:0.5b",)),
        _backend("sick", healthy=False, health_checked=True),
        _backend("off", active=False),
        _backend("chat", allow_embeddings=False),
        _backend("blue", labels=("blue",)),
    ]
    ids = ("a", "b", "c", "sick", "off", "ghost", "chat", "blue")
    table = _table(FrontendView(id="f", backends=ids, load_balancing="ModelAware"), backends=backends)
    got = _ask(table, model="llama3")
    assert got["status"] == 200 and got["error"] == ""
    assert got["order"] == ["b", "chat", "blue", "a"]  # warm first; a is full (2/2): last
    why = got["why"]
    assert why["b"] == (True, "choice", 0, 2, True)
    assert why["a"] == (True, "failover 3, full", 2, 2, False)
    assert why["c"] == (False, "does not have model 'llama3'", 0, 2, False)
    assert why["sick"][:2] == (False, "unhealthy")
    assert why["off"][:2] == (False, "inactive")
    assert why["ghost"][:2] == (False, "unknown backend")
    reply = got["reply"]
    assert (reply.dataplane, reply.revision, reply.frontend, reply.strategy) == ("dp-1", 7, "f", "ModelAware")

    embeddings = _ask(table, kind="embeddings", model="llama3", headers={"X-OllamaFlow-Label": "Blue"})
    assert embeddings["order"] == ["blue"]
    assert embeddings["why"]["chat"][:2] == (False, "does not serve embeddings")
    assert embeddings["why"]["a"][:2] == (False, "no label 'Blue'")


def test_a_dry_run_moves_no_rotation() -> None:
    table = _table(FrontendView(id="f", backends=("a", "b", "c")))
    firsts = {tuple(_ask(table, model="llama3")["order"]) for _ in range(3)}  # type: ignore[arg-type]
    assert firsts == {("a", "b", "c")}  # the rotation never moved
    # RoundRobin does not weigh load: admission passes over the full one when the request comes.
    assert _ask(table, model="llama3")["why"]["a"][:2] == (True, "choice, full")


def test_a_dry_run_follows_sticky_headers_and_ejections() -> None:
    table = _table(FrontendView(id="f", backends=("a", "b", "c"), use_sticky_sessions=True))
    pool = table.frontend_for("x").pool(COMPLETIONS)
    home = pool.order(pool.targets, sticky_key="conv-1", peek=True).order[0].id
    reply = dry_run(
        table,
        ExplainRequest(model="llama3", headers={"X-Conversation-Id": "conv-1"}),
        dataplane="dp",
        in_flight={},
        limit_of=_limit,
        ejected={home: "connection refused"},
    )
    assert reply.sticky_key == short_hash("conv-1")
    assert home not in reply.order and len(reply.order) == 2
    ejected = next(c for c in reply.candidates if c.backend == home)
    assert not ejected.eligible and ejected.reason == "ejected by this data plane: connection refused"
    all_out = dry_run(
        table,
        ExplainRequest(model="llama3", headers={"x-conversation-id": "conv-1"}),
        dataplane="dp",
        in_flight={},
        limit_of=_limit,
        ejected=dict.fromkeys("abc", "down"),
    )
    assert all_out.order == [home]  # like the proxy: its first choice anyway


def test_dry_run_errors_come_back_in_the_reply() -> None:
    table = _table(
        FrontendView(id="f", hostname="chat.test", backends=("a",), allow_embeddings=False),
        FrontendView(id="g", hostname="pull.test", backends=("a",), required_models=("mistral",)),
    )
    nothing = _ask(table, host="other.test")
    assert nothing["status"] == 404 and "other.test" in str(nothing["error"])
    assert _ask(table, host="chat.test", kind="embeddings")["status"] == 403
    missing = _ask(table, host="chat.test", model="nope")
    assert missing["status"] == 404 and missing["error"] == "model 'nope' not found"
    assert missing["why"]["a"][:2] == (False, "does not have model 'nope'")
    assert _ask(table, host="pull.test", model="mistral")["status"] == 503
    dead = _table(FrontendView(id="f", backends=("a",)), backends=[_backend("a", healthy=False)])
    assert _ask(dead, model="llama3")["status"] == 502
