"""The load-balancing strategies through the pure routing table: LeastConnections, ModelAware, and the
guarantees every strategy keeps (each candidate exactly once, dry-runs change nothing)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter

import httpx
import pytest

from dataplane.routing.strategies import least_connections, model_aware, rotated
from dataplane.routing.table import Pool, RequestKind, RoutingTable
from ollamaflow.sim import running_sim
from shared.snapshot import BackendView, FrontendView, LoadBalancing, LoadedModel, SnapshotContent, seal
from tests.dataplane.harness import RunningDataPlane, SnapshotWriter, eventually

COMPLETIONS = RequestKind.COMPLETIONS


def _backend(id: str, *, loaded: tuple[str, ...] = (), limit: int = 4, **kw: object) -> BackendView:
    return BackendView(
        id=id,
        base_url=f"http://{id}.test:11434",
        max_parallel_requests=limit,
        models=("llama3:latest", "qwen2.5:0.5b"),
        models_known=True,
        models_loaded=tuple(LoadedModel(name=name) for name in loaded),
        **kw,  # type: ignore[arg-type]
    )


def _pool(strategy: LoadBalancing, backends: list[BackendView], seed: int = 1) -> Pool:
    view = FrontendView(id="f", backends=tuple(b.id for b in backends), load_balancing=strategy)
    content = SnapshotContent(frontends=(view,), backends=tuple(backends))
    snapshot = seal(content, revision=1, generated_at="2025-01-01T00:00:00Z")
    return RoutingTable.build(snapshot, rng=random.Random(seed)).frontend_for("x").pool(COMPLETIONS)


def _ids(targets: tuple) -> list[str]:  # type: ignore[type-arg]
    return [t.id for t in targets]


def _serve(pool: Pool, model: str, requests: int, in_flight: Counter[str]) -> Counter[str]:
    """Send ``requests`` that never finish; what each backend got."""
    got: Counter[str] = Counter()
    for _ in range(requests):
        chosen = pool.order(pool.choices(model), model=model, in_flight=in_flight).order[0]
        in_flight[chosen.id] += 1
        got[chosen.id] += 1
    return got


@pytest.mark.parametrize("strategy", ["RoundRobin", "Random", "LeastConnections", "ModelAware"])
def test_every_strategy_orders_every_candidate_exactly_once(strategy: LoadBalancing) -> None:
    backends = [_backend(i, loaded=("llama3",) if i in "bd" else ()) for i in "abcde"]
    pool = _pool(strategy, backends)
    rng = random.Random(3)
    for _ in range(200):
        choices = tuple(rng.sample(pool.targets, rng.randint(1, 5)))
        in_flight = {t.id: rng.randint(0, 6) for t in choices if rng.random() < 0.7}
        decision = pool.order(choices, model="llama3", in_flight=in_flight)
        assert sorted(_ids(decision.order)) == sorted(_ids(choices))
        assert decision.strategy == strategy


def test_least_connections_takes_the_least_loaded_relative_to_its_limit() -> None:
    pool = _pool("LeastConnections", [_backend("a", limit=8), _backend("b", limit=2), _backend("c", limit=4)])
    decision = pool.order(pool.targets, in_flight={"a": 4, "b": 1, "c": 1})
    assert _ids(decision.order) == ["c", "a", "b"]  # 1/4 < 4/8 == 1/2 (rotation breaks that tie)


def test_least_connections_fills_backends_in_proportion_to_their_limits() -> None:
    pool = _pool("LeastConnections", [_backend("a", limit=6), _backend("b", limit=3), _backend("c", limit=3)])
    got = _serve(pool, "llama3", 24, Counter())
    assert got == {"a": 12, "b": 6, "c": 6}


def test_least_connections_rotates_among_equally_loaded_backends() -> None:
    pool = _pool("LeastConnections", [_backend("a"), _backend("b"), _backend("c")])
    firsts = [pool.order(pool.targets, in_flight={"a": 1, "b": 1, "c": 1}).order[0].id for _ in range(6)]
    assert firsts == ["a", "b", "c", "a", "b", "c"]
    idle = [pool.order(pool.targets).order[0].id for _ in range(3)]
    assert idle == ["a", "b", "c"]


def test_least_connections_honours_limits_given_by_the_caller() -> None:
    # The caller's limits (this data plane's share) replace the backends' whole MaxParallelRequests.
    pool = _pool("LeastConnections", [_backend("a", limit=8), _backend("b", limit=8)])
    decision = pool.order(pool.targets, in_flight={"a": 2, "b": 3}, limits={"a": 2, "b": 8})
    assert _ids(decision.order) == ["b", "a"]


def test_model_aware_prefers_backends_with_the_model_loaded() -> None:
    pool = _pool(
        "ModelAware", [_backend("cold1"), _backend("warm", loaded=("llama3:latest",)), _backend("cold2")]
    )
    for spelling in ("llama3", "llama3:latest", "LLaMA3"):
        decision = pool.order(pool.choices(spelling), model=spelling, in_flight={"warm": 2})
        assert decision.order[0].id == "warm"
        assert decision.warm == {"warm"}
    # Another model is loaded nowhere: least connections among all.
    other = pool.order(pool.choices("qwen2.5:0.5b"), model="qwen2.5:0.5b", in_flight={"warm": 2, "cold1": 1})
    assert other.order[0].id == "cold2" and other.warm == frozenset()


def test_model_aware_leaves_a_full_warm_backend_for_an_idle_cold_one() -> None:
    pool = _pool("ModelAware", [_backend("warm", loaded=("llama3",), limit=2), _backend("cold", limit=2)])
    assert _ids(pool.order(pool.targets, model="llama3", in_flight={"warm": 1}).order) == ["warm", "cold"]
    assert _ids(pool.order(pool.targets, model="llama3", in_flight={"warm": 2}).order) == ["cold", "warm"]
    # Both full: the warm one first (its request waits less than a model load would take).
    both = pool.order(pool.targets, model="llama3", in_flight={"warm": 2, "cold": 2})
    assert _ids(both.order) == ["warm", "cold"]


def test_model_aware_spreads_over_warm_backends_before_touching_cold_ones() -> None:
    backends = [
        _backend("w1", loaded=("llama3",), limit=2),
        _backend("c1", limit=2),
        _backend("w2", loaded=("llama3",), limit=2),
    ]
    pool = _pool("ModelAware", backends)
    in_flight: Counter[str] = Counter()
    assert _serve(pool, "llama3", 4, in_flight) == {"w1": 2, "w2": 2}
    assert _serve(pool, "llama3", 1, in_flight) == {"c1": 1}  # every warm one is full now


def test_model_aware_rotates_among_equal_warm_backends() -> None:
    pool = _pool("ModelAware", [_backend("a", loaded=("llama3",)), _backend("b", loaded=("llama3",))])
    firsts = [pool.order(pool.targets, model="llama3").order[0].id for _ in range(4)]
    assert firsts == ["a", "b", "a", "b"]


def test_a_dry_run_does_not_move_the_rotation() -> None:
    pool = _pool("RoundRobin", [_backend("a"), _backend("b")])
    assert [pool.order(pool.targets, peek=True).order[0].id for _ in range(3)] == ["a", "a", "a"]
    assert [pool.order(pool.targets).order[0].id for _ in range(3)] == ["a", "b", "a"]


def test_pure_helpers_keep_rotation_for_ties() -> None:
    class T:
        def __init__(self, id: str) -> None:
            self.id = id

    a, b, c = T("a"), T("b"), T("c")
    assert _ids(rotated((a, b, c), 4)) == ["b", "c", "a"]
    assert _ids(rotated((a,), 7)) == ["a"]
    assert _ids(least_connections((b, c, a), {"c": 1}, {})) == ["b", "a", "c"]
    assert _ids(model_aware((b, c, a), {}, {}, {"a"})) == ["a", "b", "c"]


# --- Through a running data plane: ModelAware with admission, real HTTP to simulators --------------


async def _sim_in_flight(client: httpx.AsyncClient, sim: str) -> int:
    return int((await client.get(sim + "/_sim/stats")).json()["in_flight"])


async def test_model_aware_uses_the_warm_backend_and_a_cold_one_only_while_it_is_full(
    dp: RunningDataPlane, writer: SnapshotWriter
) -> None:
    async with running_sim() as cold, running_sim() as warm, httpx.AsyncClient(timeout=30) as client:
        backends = (
            BackendView(id="cold", base_url=cold, max_parallel_requests=1),
            BackendView(
                id="warm",
                base_url=warm,
                max_parallel_requests=1,
                models_loaded=(LoadedModel(name="llama3.2:latest"),),
            ),
        )
        view = FrontendView(id="f", backends=("cold", "warm"), load_balancing="ModelAware")
        await writer.publish(SnapshotContent(frontends=(view,), backends=backends), 1)
        await dp.wait_revision(1)
        body = {"model": "llama3.2", "prompt": "hi", "stream": False}

        async def served() -> str:
            resp = await client.post(dp.url + "/api/generate", json=body)
            assert resp.status_code == 200, resp.text
            return resp.headers["x-ollamaflow-backend"]

        assert [await served() for _ in range(4)] == ["warm"] * 4
        # Another model, loaded nowhere: plain least-connections rotation over both.
        other = {"model": "qwen2.5:0.5b", "prompt": "hi", "stream": False}
        spread = {(await client.post(dp.url + "/api/generate", json=other)).headers["x-ollamaflow-backend"]}
        spread |= {(await client.post(dp.url + "/api/generate", json=other)).headers["x-ollamaflow-backend"]}
        assert spread == {"cold", "warm"}

        # Hold the warm backend's one slot with a slow answer: the next request goes to the idle cold
        # backend instead of waiting for the warm one.
        await client.post(warm + "/_sim/config", json={"latency_ms": 60_000})
        held = asyncio.create_task(client.post(dp.url + "/api/generate", json=body))
        try:
            await eventually(lambda: dp.app.traffic.in_flight.get("warm", 0) == 1, 20, "warm busy")
            assert await served() == "cold"
        finally:
            held.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await held
        await client.post(warm + "/_sim/config", json={"latency_ms": 0})
        await eventually(lambda: dp.app.traffic.in_flight.get("warm", 0) == 0, 20, "warm free again")
        assert await served() == "warm"
