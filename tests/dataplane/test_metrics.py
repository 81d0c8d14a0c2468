"""Prometheus metrics of a data plane after real traffic to the simulator and to a recording backend,
read with prometheus_client's own parser and checked by value."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import replace

import httpx
import ollama
import pytest
from msgspec.json import encode
from msgspec.structs import replace as replace_struct
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dataplane.app import DataPlane
from dataplane.settings import DataPlaneSettings
from ollamaflow.sim import running_sim
from shared.secret_box import load_keyring
from shared.signing import sign
from shared.snapshot import BackendView, seal
from tests.dataplane.harness import (
    RunningDataPlane,
    SnapshotWriter,
    content,
    eventually,
    running_dataplane,
    sealed,
    serve_frontend,
    snapshot_bytes,
)
from tests.dataplane.recorder import recorder
from tests.support.signing import other_signer

MESSAGES = [{"role": "user", "content": "Count to three."}]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample as (name, labels) -> value, through prometheus_client's parser."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0 when none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


async def scrape(url: str, token: str = "") -> Samples:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient() as client:
        response = await client.get(url + "/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return parse(response.text)


async def test_requests_latency_and_tokens_are_counted_by_value(
    dp: RunningDataPlane, writer: SnapshotWriter
) -> None:
    async with running_sim(tokens_per_second=500) as sim:  # streams come in several chunks
        await serve_frontend(writer, dp, [BackendView(id="sim", base_url=sim)])
        client = ollama.AsyncClient(host=dp.url)
        eval_counts = 0
        for _ in range(5):
            answer = await client.chat(model="llama3.2", messages=MESSAGES)
            eval_counts += answer.eval_count or 0
        parts = [p async for p in await client.chat(model="llama3.2", messages=MESSAGES, stream=True)]
        eval_counts += parts[-1].eval_count or 0
        samples = await scrape(dp.url)

    served = {"frontend": "f", "backend": "sim", "model": "llama3.2", "endpoint": "/api/chat"}
    assert eval_counts > 0
    assert (
        value(
            samples,
            "ollamaflow_dataplane_requests_total",
            **served,
            status="200",
            client_format="ollama",
            relay="passthrough",
        )
        == 6
    )
    assert value(samples, "ollamaflow_dataplane_request_duration_seconds_count", **served) == 6
    # Every request ended within the last bucket, and none took less than 0 s.
    assert value(samples, "ollamaflow_dataplane_request_duration_seconds_bucket", **served, le="+Inf") == 6
    assert value(samples, "ollamaflow_dataplane_request_duration_seconds_bucket", **served, le="300.0") == 6
    assert value(samples, "ollamaflow_dataplane_time_to_first_byte_seconds_count", **served) == 6
    token_labels = {"frontend": "f", "backend": "sim", "model": "llama3.2"}
    assert value(samples, "ollamaflow_dataplane_output_tokens_total", **token_labels) == eval_counts
    assert value(samples, "ollamaflow_dataplane_input_tokens_total", **token_labels) > 0
    assert value(samples, "ollamaflow_dataplane_output_tokens_per_second_count", **token_labels) == 1
    assert value(samples, "ollamaflow_dataplane_proxied_requests_total") == 6
    assert value(samples, "ollamaflow_dataplane_snapshot_revision") == dp.app.state.revision
    assert value(samples, "ollamaflow_dataplane_snapshot_age_seconds") > 0
    assert value(samples, "ollamaflow_dataplane_backend_slots", backend="sim") > 0
    assert value(samples, "ollamaflow_dataplane_info", id=dp.app.settings.dataplane_id) == 1


async def test_a_model_no_backend_has_takes_no_label_of_its_own(
    dp: RunningDataPlane, writer: SnapshotWriter
) -> None:
    async with running_sim() as sim:
        await serve_frontend(writer, dp, [BackendView(id="sim", base_url=sim)])
        async with httpx.AsyncClient() as client:
            response = await client.post(dp.url + "/api/chat", json={"model": "nope", "messages": MESSAGES})
        samples = await scrape(dp.url)
    assert response.status_code == 404  # the simulator's own answer, relayed
    assert value(samples, "ollamaflow_dataplane_requests_total", backend="sim", status="404") == 1
    # A name no backend answered successfully takes no label of its own.
    assert value(samples, "ollamaflow_dataplane_requests_total", model="nope") == 0
    assert value(samples, "ollamaflow_dataplane_requests_total", model="other", status="404") == 1


async def test_a_full_queue_a_disconnect_and_a_queue_wait_are_counted(
    dp: RunningDataPlane, writer: SnapshotWriter
) -> None:
    async with recorder() as rec:
        backend = BackendView(id="rec", base_url=rec.url, max_parallel_requests=1)
        await serve_frontend(writer, dp, [backend], queue_size=0)
        async with httpx.AsyncClient(timeout=10) as client:
            slow = asyncio.create_task(client.post(dp.url + "/api/chat", json={"model": "slow"}))
            await eventually(lambda: len(rec.seen) == 1, what="the slow request reached the backend")
            refused = await client.post(dp.url + "/api/chat", json={"model": "echo"})
            in_flight = await scrape(dp.url)
            slow.cancel()  # the client leaves: the data plane cancels its upstream request
            with contextlib.suppress(asyncio.CancelledError):
                await slow
        await eventually(lambda: not dp.app.traffic.in_flight, what="the slot freed")
        samples = await scrape(dp.url)
    assert refused.status_code == 503
    assert value(in_flight, "ollamaflow_dataplane_in_flight", backend="rec") == 1
    assert value(in_flight, "ollamaflow_dataplane_frontend_in_flight", frontend="f") == 1
    assert value(samples, "ollamaflow_dataplane_rejected_requests_total", frontend="f", status="503") == 1
    assert value(samples, "ollamaflow_dataplane_client_disconnects_total", frontend="f", backend="rec") == 1
    assert value(samples, "ollamaflow_dataplane_requests_total", frontend="f", backend="rec", status="0") == 1


async def test_a_failed_backend_counts_a_retry_a_failover_and_an_ejection(
    dp: RunningDataPlane, writer: SnapshotWriter
) -> None:
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    try:
        async with running_sim() as sim:
            dead_url = f"http://127.0.0.1:{dead.getsockname()[1]}"
            backends = [BackendView(id="dead", base_url=dead_url), BackendView(id="sim", base_url=sim)]
            await serve_frontend(writer, dp, backends, load_balancing="RoundRobin")
            client = ollama.AsyncClient(host=dp.url)
            for _ in range(2):
                await client.chat(model="llama3.2", messages=MESSAGES)
            samples = await scrape(dp.url)
    finally:
        dead.close()
    assert value(samples, "ollamaflow_dataplane_retries_total", frontend="f", backend="dead") == 1
    assert value(samples, "ollamaflow_dataplane_failovers_total", frontend="f") == 1
    assert value(samples, "ollamaflow_dataplane_backend_ejections_total", backend="dead") == 1
    assert value(samples, "ollamaflow_dataplane_backend_ejected", backend="dead") == 1
    assert value(samples, "ollamaflow_dataplane_requests_total", backend="sim", status="200") == 2


async def test_the_metrics_can_require_a_token(dp_settings: DataPlaneSettings) -> None:
    settings = replace(dp_settings, metrics_token="scrape-secret")
    async with running_dataplane(settings) as running, httpx.AsyncClient() as client:
        refused = await client.get(running.url + "/metrics")
        wrong = await client.get(running.url + "/metrics", headers={"Authorization": "Bearer nope"})
        samples = await scrape(running.url, token="scrape-secret")
    assert (refused.status_code, wrong.status_code) == (401, 401)
    assert value(samples, "ollamaflow_dataplane_snapshot_revision") == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_the_metrics_can_have_a_port_of_their_own(dp_settings: DataPlaneSettings) -> None:
    port = _free_port()
    settings = replace(dp_settings, dataplane_metrics_port=port, metrics_token="t")
    async with running_dataplane(settings) as running, httpx.AsyncClient() as client:
        on_main = await client.get(running.url + "/metrics")
        own = f"http://127.0.0.1:{port}"
        samples = await scrape(own, token="t")
        refused = await client.get(own + "/metrics")
        elsewhere = await client.get(own + "/healthz", headers={"Authorization": "Bearer t"})
    assert on_main.status_code == 404
    assert value(samples, "ollamaflow_dataplane_draining") == 0
    assert (refused.status_code, elsewhere.status_code) == (401, 404)


@pytest.mark.parametrize("enabled", [False])
async def test_metrics_can_be_turned_off(dp_settings: DataPlaneSettings, enabled: bool) -> None:
    async with running_dataplane(replace(dp_settings, metrics=enabled)) as running, httpx.AsyncClient() as c:
        response = await c.get(running.url + "/metrics")
    assert response.status_code == 404


def test_snapshot_rejected_is_a_refused_snapshot_not_an_unopened_secret(
    dp_settings: DataPlaneSettings,
) -> None:
    """A snapshot signed by a stranger is rejected (1); one applied whose backend secrets this data
    plane cannot open is not (0), though its report names the problem; a good one clears it."""
    plane = DataPlane(replace(dp_settings, secrets=load_keyring()))  # no secrets key here
    assert plane.metrics is not None
    registry = plane.metrics.registry

    def rejected() -> float:
        return value(parse(generate_latest(registry).decode()), "ollamaflow_dataplane_snapshot_rejected")

    good = content({"b": "http://127.0.0.1:1"})
    assert plane.state.apply(snapshot_bytes(good, 1), source="test", save=False) and rejected() == 0
    stranger = sign(seal(good, revision=2, generated_at="2025-01-01T00:00:00Z"), other_signer())
    assert not plane.state.apply(encode(stranger), source="test", save=False)
    assert plane.state.error and rejected() == 1
    unopened = content({"b": "http://127.0.0.1:1"}, bearer_token="tok")
    unopened = replace_struct(unopened, backends=tuple(sealed(b) for b in unopened.backends))
    assert plane.state.apply(snapshot_bytes(unopened, 3), source="test", save=False)
    assert "secrets" in plane.state.error and rejected() == 0
