"""Explainable routing: the X-OllamaFlow-Route header (given only where the frontend allows it, or
to an admin token) and the dry-run reply."""

from __future__ import annotations

import asyncio
import random
import time
from contextlib import AsyncExitStack

import httpx
import msgspec

from dataplane.routing.explain import MAX_HEADER, dry_run, route_header
from dataplane.routing.sticky import short_hash
from dataplane.routing.table import RequestKind, RoutingTable
from ollamaflow.sim import running_sim
from shared.bus import Bus
from shared.credentials import digest
from shared.errors import BusNoResponder
from shared.snapshot import BackendView, FrontendView, LoadedModel, SnapshotContent, seal
from shared.wire.explain import ExplainReply, ExplainRequest, decode_reply, encode
from tests.dataplane.harness import RunningDataPlane, SnapshotWriter, content
from tests.support.processes import free_port

COMPLETIONS = RequestKind.COMPLETIONS


def _backend(id: str, *, loaded: tuple[str, ...] = (), **kw: object) -> BackendView:
    options: dict[str, object] = {
        "models": ("llama3:latest",),
        "models_known": True,
        "max_parallel_requests": 2,
        **kw,
    }
    return BackendView(
        id=id,
        base_url=f"http://{id}.test:11434",
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


def test_a_backend_without_a_parallel_limit_is_never_full_and_shows_as_unlimited() -> None:
    backends = [_backend("a", max_parallel_requests=0), _backend("b", loaded=("llama3",))]
    table = _table(FrontendView(id="f", backends=("a", "b"), load_balancing="ModelAware"), backends=backends)
    pool = table.frontend_for("x").pool(COMPLETIONS)
    in_flight = {"a": 50, "b": 2}

    def limit_of(backend_id: str) -> int:
        return pool.limits[backend_id]  # MaxParallelRequests, UNLIMITED for 0

    decision = pool.order(pool.choices("llama3"), model="llama3", in_flight=in_flight)
    # b is warm but full (2/2); a, cold with 50 running, is never full: it goes first.
    assert [t.id for t in decision.order] == ["a", "b"]
    _, value = route_header(decision, in_flight=in_flight, limit_of=limit_of, served=decision.order[0])
    assert value.startswith(b"strategy=ModelAware; candidates=a[50/unlimited],b[2/2 warm full]")
    reply = dry_run(
        table,
        ExplainRequest(model="llama3"),
        dataplane="dp-1",
        in_flight=in_flight,
        limit_of=limit_of,
        ejected={},
    )
    assert {c.backend: (c.reason, c.limit) for c in reply.candidates} == {
        "a": ("choice", 0),
        "b": ("failover 1, full", 2),
    }


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


# --- Through a running data plane: real HTTP, real bus, simulated backends --------------------------


async def _serve(
    writer: SnapshotWriter, dp: RunningDataPlane, backends: dict[str, str], **frontend: object
) -> None:
    view = FrontendView(id="f", hostname="*", backends=tuple(backends), **frontend)  # type: ignore[arg-type]
    revision = dp.app.state.revision + 1
    models = {"models": ("llama3.2:latest", "all-minilm:latest"), "models_known": True}
    # The tests send bursts of requests: the default rate limit (10 a second) would send some to
    # the next backend, and the rotation they check would depend on the machine's speed.
    limits = {"max_parallel_requests": 3, "rate_limit_requests_threshold": 1000}
    await writer.publish(content(backends, [view], **limits, **models), revision)
    await dp.wait_revision(revision)


async def test_the_route_header_comes_only_when_asked_for(
    dp: RunningDataPlane, writer: SnapshotWriter
) -> None:
    async with running_sim() as sim, httpx.AsyncClient(base_url=dp.url) as client:
        await _serve(writer, dp, {"one": sim}, load_balancing="LeastConnections", allow_route_explain=True)
        body = {"model": "llama3.2", "prompt": "hi", "stream": False}
        plain = await client.post("/api/generate", json=body)
        assert plain.status_code == 200 and "x-ollamaflow-route" not in plain.headers
        asked = await client.post("/api/generate", json=body, headers={"X-OllamaFlow-Explain": "1"})
        assert asked.status_code == 200
        # (then "; queued_ms=..." if the backend's rate limit made it wait)
        assert asked.headers["x-ollamaflow-route"].startswith(
            "strategy=LeastConnections; candidates=one[1/3]; chosen=one; served=one"
        )
        stream = await client.post(
            "/v1/chat/completions",
            json={"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": True},
            headers={"X-OllamaFlow-Explain": "1"},
        )
        assert stream.status_code == 200 and "served=one" in stream.headers["x-ollamaflow-route"]


async def test_without_permission_the_explain_header_is_ignored_unless_an_admin_token_comes(
    dp: RunningDataPlane, writer: SnapshotWriter
) -> None:
    token = "an-admin-token-of-thirty-two-chars"
    async with running_sim() as sim, httpx.AsyncClient(base_url=dp.url) as client:
        view = FrontendView(id="f", hostname="*", backends=("one",))
        published = content({"one": sim}, [view], models=("llama3.2:latest",), models_known=True)
        cluster = msgspec.structs.replace(published.cluster, admin_token_digests=(digest(token),))
        revision = dp.app.state.revision + 1
        await writer.publish(msgspec.structs.replace(published, cluster=cluster), revision)
        await dp.wait_revision(revision)
        body = {"model": "llama3.2", "prompt": "hi", "stream": False}
        explain = {"X-OllamaFlow-Explain": "1"}
        for headers in (
            explain,
            {**explain, "X-OllamaFlow-Admin-Token": "not-the-token"},
            {**explain, "Authorization": "Bearer not-the-token"},
        ):
            ignored = await client.post("/api/generate", json=body, headers=headers)
            assert ignored.status_code == 200 and "x-ollamaflow-route" not in ignored.headers
        for headers in (
            {**explain, "X-OllamaFlow-Admin-Token": token},
            {**explain, "Authorization": f"Bearer {token}"},
        ):
            honoured = await client.post("/api/generate", json=body, headers=headers)
            assert honoured.status_code == 200
            assert honoured.headers["x-ollamaflow-route"].startswith("strategy=RoundRobin; candidates=one[")
        missing = await client.post("/api/generate", json={**body, "model": "nope"}, headers=explain)
        assert missing.status_code == 404 and "x-ollamaflow-route" not in missing.headers


async def test_the_route_header_tells_which_backend_failed_before_the_one_that_served(
    dp: RunningDataPlane, writer: SnapshotWriter
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there: connection refused
    async with running_sim() as sim, httpx.AsyncClient(base_url=dp.url) as client:
        await _serve(writer, dp, {"dead": dead, "live": sim}, allow_route_explain=True)
        resp = await client.post(
            "/api/generate",
            json={"model": "llama3.2", "prompt": "hi", "stream": False},
            headers={"X-OllamaFlow-Explain": "1"},
        )
        assert resp.status_code == 200 and resp.headers["x-ollamaflow-backend"] == "live"
        route = resp.headers["x-ollamaflow-route"]
        assert route.startswith("strategy=RoundRobin; candidates=dead[")
        assert route.endswith("chosen=dead; served=live; failed=dead")


async def test_sticky_sessions_through_the_proxy(dp: RunningDataPlane, writer: SnapshotWriter) -> None:
    async with AsyncExitStack() as stack, httpx.AsyncClient(base_url=dp.url) as client:
        sims = {f"s{i}": await stack.enter_async_context(running_sim()) for i in range(3)}
        sticky = {"use_sticky_sessions": True, "sticky_headers": ("x-session",)}
        await _serve(writer, dp, sims, allow_route_explain=True, **sticky)
        body = {"model": "llama3.2", "prompt": "hi", "stream": False}

        async def served(session: str) -> str:
            resp = await client.post("/api/generate", json=body, headers={"X-Session": session})
            assert resp.status_code == 200
            return resp.headers["x-ollamaflow-backend"]

        homes = {f"conv-{i}": await served(f"conv-{i}") for i in range(12)}
        assert len(set(homes.values())) > 1  # sessions spread over the backends
        for session, home in homes.items():
            assert await served(session) == home
        # The default header is not configured on this frontend: no stickiness from it.
        rotation = {
            (await client.post("/api/generate", json=body, headers={"X-Conversation-Id": "c"})).headers[
                "x-ollamaflow-backend"
            ]
            for _ in range(3)
        }
        assert rotation == set(sims)
        asked = await client.post(
            "/api/generate", json=body, headers={"X-Session": "conv-0", "X-OllamaFlow-Explain": "1"}
        )
        assert f"sticky={short_hash('conv-0')} home" in asked.headers["x-ollamaflow-route"]


async def test_the_data_plane_answers_dry_runs_on_the_bus(
    dp: RunningDataPlane, writer: SnapshotWriter, bus: Bus
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with running_sim() as sim:
        await _serve(writer, dp, {"a": sim, "b": dead}, load_balancing="ModelAware")
        ask = ExplainRequest(model="llama3.2", headers={"X-OllamaFlow-Label": ""})

        async def answered() -> ExplainReply:
            deadline = time.monotonic() + 15
            while True:
                try:
                    data = await bus.request(bus.names.explain_subject, encode(ask), wait=5.0)
                    return decode_reply(data)
                except BusNoResponder:  # the data plane subscribes once its bus is connected
                    assert time.monotonic() < deadline, "no data plane answers dry-runs"
                    await asyncio.sleep(0.05)

        reply = await answered()
        assert (reply.status, reply.dataplane, reply.frontend, reply.strategy) == (
            200,
            dp.app.settings.dataplane_id,
            "f",
            "ModelAware",
        )
        assert reply.order == ["a", "b"] and reply.revision == dp.app.state.revision
        assert [(c.backend, c.eligible, c.limit) for c in reply.candidates] == [
            ("a", True, 3),
            ("b", True, 3),
        ]
        # Nothing went upstream, and the rotation did not move: the next real request goes to a.
        async with httpx.AsyncClient(base_url=dp.url) as client:
            resp = await client.post(
                "/api/generate", json={"model": "llama3.2", "prompt": "x", "stream": False}
            )
        assert resp.headers["x-ollamaflow-backend"] == "a"
        # Errors come back in the reply.
        ask = ExplainRequest(host="x", kind="embeddings", model="nope")
        missing = await answered()
        assert (missing.status, missing.error) == (404, "model 'nope' not found")
        bad = decode_reply(await bus.request(bus.names.explain_subject, b"{not json", wait=5.0))
        assert bad.status == 400
