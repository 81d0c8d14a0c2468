"""API keys across a cluster: a control plane and two ``ollamaflow dataplane`` processes, configured
through the admin API. A key's rate limit holds for both data planes together, its use shows up in
the admin API, and a data plane restarting neither loses nor doubles what it counted.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.test_limits import DATAPLANES, _sims, processes
from tests.support.processes import free_port, ollamaflow, stop, wait_ready
from tests.support.services import fresh_database

__all__ = ["processes"]

pytestmark = pytest.mark.slow

TOKEN = "api-keys-e2e-admin-token-0123456789"
LIMIT = 10  # requests per second for the key, cluster-wide
BURST = 15  # requests sent at once to each data plane
CHAT = [{"role": "user", "content": "hi"}]


def _dataplane(
    stack: ExitStack, tmp_path: Path, env: dict[str, str], plane: str, port: int, run: int = 0
) -> subprocess.Popen[bytes]:
    log = tmp_path / f"{plane}-{run}.log"
    args = ["dataplane", "--host", "127.0.0.1", "--port", str(port), "--id", plane]
    proc = stack.enter_context(ollamaflow(args, log, env))
    wait_ready(f"http://127.0.0.1:{port}/healthz", proc, log)
    return proc


async def _until(what: str, check: object, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what}: not within {within}s"
        await asyncio.sleep(0.1)


async def test_a_keys_limit_holds_across_data_planes_and_its_use_is_counted_once(
    processes: tuple[ExitStack, Path, dict[str, str]], database_url: str
) -> None:
    stack, tmp_path, env = processes
    env = {
        **env,
        "OLLAMAFLOW_DATABASE_URL": stack.enter_context(fresh_database(database_url)),
        "OLLAMAFLOW_ADMIN_TOKENS": TOKEN,
        "OLLAMAFLOW_REPORT_INTERVAL": "0.3",
        "OLLAMAFLOW_HEALTH_INTERVAL": "0.5",
    }
    [(sim, _)] = _sims(stack, tmp_path, 1, latency_ms=0)
    cp_port, cp_log = free_port(), tmp_path / "cp.log"
    cp = stack.enter_context(ollamaflow(["controlplane", "--port", str(cp_port)], cp_log, env))
    ports = {plane: free_port() for plane in DATAPLANES}
    procs = {plane: _dataplane(stack, tmp_path, env, plane, port) for plane, port in ports.items()}
    planes = [f"http://127.0.0.1:{port}" for port in ports.values()]
    cp_url = f"http://127.0.0.1:{cp_port}"
    wait_ready(cp_url + "/readyz", cp, cp_log, timeout=60)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        httpx.AsyncClient(base_url=cp_url + "/v1.0", headers=headers, timeout=10) as admin,
        httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=100)) as client,
    ):
        backend = {"Identifier": "sim", "Hostname": "127.0.0.1", "Port": int(sim.rsplit(":", 1)[1])}
        assert (
            await admin.put("/backends", json={**backend, "RateLimitRequestsThreshold": 100_000})
        ).status_code == 201
        frontend = {"Identifier": "all", "Hostname": "*", "Backends": ["sim"], "RequireApiKeys": True}
        assert (await admin.put("/frontends", json=frontend)).status_code == 201
        created = await admin.put(
            "/apikeys", json={"Identifier": "k", "Frontends": ["all"], "RateLimitRequestsPerSecond": LIMIT}
        )
        assert created.status_code == 201
        key = created.json()["Key"]

        async def split_applied() -> bool:
            snapshot = (await admin.get("/snapshot")).json()
            content = snapshot["Content"]
            healthy = any(b["id"] == "sim" and b["healthy"] for b in content["backends"])
            rates = {p["id"]: p.get("key_rates", {}).get("k") for p in content["cluster"]["dataplanes"]}
            applied = {p["Id"]: p["AppliedRevision"] for p in (await admin.get("/dataplanes")).json()}
            return (
                healthy
                and set(rates) == set(DATAPLANES)
                and all(rates.values())
                and sum(rates.values()) <= LIMIT
                and all(applied.get(p, 0) >= snapshot["Revision"] for p in DATAPLANES)
            )

        await _until("both data planes applying their parts of the key's rate", split_applied)

        # Without a key, or with a wrong one: the official client's AuthenticationError, on both.
        for url in planes:
            with pytest.raises(openai.AuthenticationError):
                bad = openai.AsyncOpenAI(base_url=url + "/v1", api_key="ofk_wrong", max_retries=0)
                await bad.chat.completions.create(model="llama3.2", messages=CHAT)  # type: ignore[arg-type]

        body = {"model": "llama3.2", "prompt": "hi", "stream": False}
        keyed = {"Authorization": f"Bearer {key}"}
        started = time.monotonic()
        answers = await asyncio.gather(
            *(
                client.post(url + "/api/generate", json=body, headers=keyed)
                for url in planes
                for _ in range(BURST)
            )
        )
        elapsed = time.monotonic() - started
        statuses = [a.status_code for a in answers]
        accepted, limited = statuses.count(200), statuses.count(429)
        assert accepted + limited == len(answers), statuses
        # Each data plane starts with its part of the limit as tokens and refills at that part's rate,
        # so together they admit at most LIMIT at once plus LIMIT a second (each alone would take LIMIT).
        assert accepted <= LIMIT + LIMIT * elapsed + 1, (accepted, elapsed)
        assert limited and all(
            1 <= int(a.headers["retry-after"]) <= 60 for a in answers if a.status_code == 429
        )
        with pytest.raises(openai.RateLimitError):
            api = openai.AsyncOpenAI(base_url=planes[0] + "/v1", api_key=key, max_retries=0)
            for _ in range(2 * LIMIT):
                await api.chat.completions.create(model="llama3.2", messages=CHAT)  # type: ignore[arg-type]

        async def counted(requests: int | None = None) -> dict[str, object] | None:
            usage = (await admin.get("/apikeys/k")).json()
            done = usage["RequestsTotal"] + usage["RateLimitedTotal"] >= len(answers) + 1
            if requests is not None:
                done = usage["RequestsTotal"] == requests
            return usage if done and usage["LastUsedUtc"] else None

        await _until("the key's use in the admin API", counted)
        usage = await counted()
        assert usage is not None
        assert usage["RequestsTotal"] >= accepted and usage["RateLimitedTotal"] >= limited + 1
        before = usage["RequestsTotal"]

        # dp1 restarts under the same id: what it counted stays, and nothing is counted twice.
        stop(procs["dp1"])
        _dataplane(stack, tmp_path, env, "dp1", ports["dp1"], run=1)
        ready = planes[1] + "/readyz"
        await _until("the restarted data plane holding a snapshot", lambda: _ok(client, ready))
        await asyncio.sleep(1.5)  # a full bucket again
        one = await client.post(planes[1] + "/api/generate", json=body, headers=keyed)
        assert one.status_code == 200, one.text
        await _until("the restarted data plane's request counted", lambda: counted(before + 1))
        await asyncio.sleep(3)  # more reports and flushes: still counted once
        assert (await admin.get("/apikeys/k")).json()["RequestsTotal"] == before + 1


async def _ok(client: httpx.AsyncClient, url: str) -> bool:
    return (await client.get(url)).status_code == 200
