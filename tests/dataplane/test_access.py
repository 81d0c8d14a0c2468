"""A frontend's access settings on a running data plane, with the official clients: API keys (and
their rates and counters), model management off by default, and BlockHttp10.

The snapshots are written straight to the bus, as the control plane would publish them; the keys in
them are digests only, so any string serves as a key here.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import ollama
import openai
import pytest

from shared.credentials import digest
from shared.snapshot import ApiKeyView, BackendView, ClusterView, DataPlaneView, FrontendView, SnapshotContent
from tests.dataplane.harness import RunningDataPlane, SnapshotWriter
from tests.dataplane.recorder import recorder

KEY = "ofk_" + "a" * 43
OTHER = "ofk_" + "b" * 43  # valid only for frontend g
MANAGER = "ofk_" + "m" * 43  # may manage models
CHAT = [{"role": "user", "content": "hi"}]
MODELS = {"models": ("llama3.2:latest", "all-minilm:latest"), "models_known": True}


def _key(ident: str, secret: str, frontends: tuple[str, ...] = ("f",), **fields: object) -> ApiKeyView:
    return ApiKeyView(id=ident, digest=digest(secret), frontends=frontends, **fields)  # type: ignore[arg-type]


async def _publish(
    writer: SnapshotWriter,
    dp: RunningDataPlane,
    backend: str,
    *,
    keys: Sequence[ApiKeyView] = (),
    cluster: ClusterView | None = None,
    **settings: object,
) -> None:
    """Frontend f (catch-all, with ``settings``) and g (host g.test, defaults) over one backend."""
    frontends = (
        FrontendView(id="f", hostname="*", backends=("b",), **settings),  # type: ignore[arg-type]
        FrontendView(id="g", hostname="g.test", backends=("b",)),
    )
    backends = (BackendView(id="b", base_url=backend, **MODELS),)  # type: ignore[arg-type]
    content = SnapshotContent(
        frontends=frontends, backends=backends, api_keys=tuple(keys), cluster=cluster or ClusterView()
    )
    revision = dp.app.state.revision + 1
    await writer.publish(content, revision)
    await dp.wait_revision(revision)


def _openai(dp: RunningDataPlane, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=dp.url + "/v1", api_key=key, max_retries=0)


async def test_a_frontend_that_requires_keys_serves_the_official_clients_only_with_one(
    dp: RunningDataPlane, writer: SnapshotWriter, backend_urls: list[str]
) -> None:
    keys = [_key("k", KEY), _key("other", OTHER, ("g",))]
    await _publish(writer, dp, backend_urls[0], keys=keys, require_api_keys=True)

    client = _openai(dp, KEY)
    chat = await client.chat.completions.create(model="llama3.2", messages=CHAT)  # type: ignore[arg-type]
    assert chat.choices[0].message.content
    embedded = await client.embeddings.create(model="all-minilm", input=["a", "b"])
    assert len(embedded.data) == 2
    assert {m.id for m in (await client.models.list()).data} >= {"llama3.2:latest"}
    for wrong in ("ofk_wrong", OTHER, "x" * 1000):
        with pytest.raises(openai.AuthenticationError) as refused:
            await _openai(dp, wrong).chat.completions.create(model="llama3.2", messages=CHAT)  # type: ignore[arg-type]
        assert refused.value.response.headers["www-authenticate"] == "Bearer"
        assert refused.value.body["code"] == "invalid_api_key"  # type: ignore[index]

    for headers in ({"Authorization": f"Bearer {KEY}"}, {"X-Api-Key": KEY}):
        keyed = ollama.AsyncClient(host=dp.url, headers=headers)
        answer = await keyed.chat(model="llama3.2", messages=CHAT)
        assert answer.message.content
        assert "llama3.2:latest" in {m.model for m in (await keyed.list()).models}
    for headers in ({}, {"Authorization": "Bearer ofk_wrong"}, {"X-Api-Key": OTHER}):
        with pytest.raises(ollama.ResponseError) as refused_ollama:
            await ollama.AsyncClient(host=dp.url, headers=headers).chat(model="llama3.2", messages=CHAT)
        assert refused_ollama.value.status_code == 401
    assert "not valid for this frontend" in refused_ollama.value.error  # the last: a key of g

    async with httpx.AsyncClient(base_url=dp.url) as http:
        anonymous = await http.post("/api/chat", json={"model": "llama3.2", "messages": CHAT})
        assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"
        assert "requires an API key (RequireApiKeys)" in anonymous.json()["error"]
        for path in ("/api/tags", "/api/ps", "/v1/models", "/v1/models/llama3.2:latest"):
            assert (await http.get(path)).status_code == 401, path
        assert (await http.post("/api/show", json={"model": "llama3.2"})).status_code == 401
        # The probes of "is Ollama there" need no key; nor does frontend g, which requires none, and
        # there a key that is not one of ours is simply not looked at.
        assert (await http.get("/")).status_code == 200
        assert (await http.get("/api/version")).status_code == 200
        open_chat = await http.post(
            "/api/chat",
            json={"model": "llama3.2", "messages": CHAT, "stream": False},
            headers={"Host": "g.test", "Authorization": "Bearer whatever"},
        )
        assert open_chat.status_code == 200


async def test_keys_and_admin_tokens_never_reach_the_backend(
    dp: RunningDataPlane, writer: SnapshotWriter
) -> None:
    async with recorder() as rec:
        await _publish(writer, dp, rec.url, keys=[_key("k", KEY)], require_api_keys=True)
        async with httpx.AsyncClient(base_url=dp.url) as http:
            headers = {"X-Api-Key": KEY, "Authorization": f"Bearer {KEY}", "X-OllamaFlow-Admin-Token": "t"}
            resp = await http.post("/api/chat", json={"model": "llama3.2"}, headers=headers)
    assert resp.status_code == 200, resp.text
    sent = {name.lower() for name in rec.seen[-1].headers}
    assert not sent & {"x-api-key", "authorization", "x-ollamaflow-admin-token"}


async def _managed_calls(client: ollama.AsyncClient, blob: Path) -> dict[str, int]:
    """Each management call of the ollama client: the status it ended with (200 on success)."""
    calls = {
        "pull": lambda: client.pull("llama3.2"),
        "delete": lambda: client.delete("llama3.2"),
        "copy": lambda: client.copy("llama3.2", "copied"),
        "create": lambda: client.create("mine", from_="llama3.2"),
        "push": lambda: client.push("llama3.2"),
        "blobs": lambda: client.create_blob(blob),
    }
    statuses = {}
    for name, call in calls.items():
        try:
            await call()
            statuses[name] = 200
        except ollama.ResponseError as exc:
            statuses[name] = exc.status_code
    return statuses


async def test_model_management_is_refused_unless_the_frontend_allows_it(
    dp: RunningDataPlane, writer: SnapshotWriter, backend_urls: list[str], tmp_path: Path
) -> None:
    blob = tmp_path / "w.gguf"
    blob.write_bytes(b"GGUF weights")
    blob_path = "/api/blobs/sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest()
    client = ollama.AsyncClient(host=dp.url)
    await _publish(writer, dp, backend_urls[0])
    assert set((await _managed_calls(client, blob)).values()) == {403}
    with pytest.raises(ollama.ResponseError) as refused:
        await client.pull("llama3.2")
    assert "AllowModelManagement is false" in refused.value.error
    async with httpx.AsyncClient(base_url=dp.url) as http:
        assert (await http.head(blob_path)).status_code == 403
    assert "/api/blobs" not in str(await _stats(backend_urls[0]))  # nothing reached the backend

    await _publish(writer, dp, backend_urls[0], allow_model_management=True)
    allowed = await _managed_calls(client, blob)
    # Without a control plane, pull, delete and copy get 503 (see test_manage.py); the rest is served.
    assert allowed == {"pull": 503, "delete": 503, "copy": 503, "create": 200, "push": 200, "blobs": 200}
    async with httpx.AsyncClient(base_url=dp.url) as http:
        assert (await http.head(blob_path)).status_code == 200


async def test_model_management_may_require_a_key_that_allows_it(
    dp: RunningDataPlane, writer: SnapshotWriter, backend_urls: list[str], tmp_path: Path
) -> None:
    blob = tmp_path / "w.gguf"
    blob.write_bytes(b"GGUF other weights")
    keys = [_key("user", KEY), _key("admin", MANAGER, allow_model_management=True)]
    await _publish(
        writer,
        dp,
        backend_urls[0],
        keys=keys,
        allow_model_management=True,
        model_management_requires_key=True,
    )
    anonymous = await _managed_calls(ollama.AsyncClient(host=dp.url), blob)
    user = await _managed_calls(ollama.AsyncClient(host=dp.url, headers={"X-Api-Key": KEY}), blob)
    admin = ollama.AsyncClient(host=dp.url, headers={"Authorization": f"Bearer {MANAGER}"})
    assert set(anonymous.values()) == {401} and set(user.values()) == {403}
    assert await _managed_calls(admin, blob) == {
        "pull": 503,
        "delete": 503,
        "copy": 503,
        "create": 200,
        "push": 200,
        "blobs": 200,
    }
    with pytest.raises(ollama.ResponseError) as no_key:
        await ollama.AsyncClient(host=dp.url).pull("llama3.2")
    assert "ModelManagementRequiresKey" in no_key.value.error
    with pytest.raises(ollama.ResponseError) as weak_key:
        await ollama.AsyncClient(host=dp.url, headers={"X-Api-Key": KEY}).pull("llama3.2")
    assert "may not manage models" in weak_key.value.error
    # Inference on this frontend does not require keys.
    answer = await ollama.AsyncClient(host=dp.url).chat(model="llama3.2", messages=CHAT)
    assert answer.message.content


async def _stats(url: str) -> dict[str, object]:
    async with httpx.AsyncClient() as http:
        return (await http.get(url + "/_sim/stats")).json()


async def test_a_keys_rate_is_this_data_planes_part_and_its_use_is_reported(
    dp: RunningDataPlane, writer: SnapshotWriter, backend_urls: list[str]
) -> None:
    me = dp.app.settings.dataplane_id
    # The key allows 50 requests/s for the cluster; this data plane's part is 2 (the other's 48).
    cluster = ClusterView(
        dataplanes=(
            DataPlaneView(id=me, key_rates={"k": 2.0}),
            DataPlaneView(id="other", key_rates={"k": 48.0}),
        )
    )
    keys = [_key("k", KEY, rate_limit_requests_per_second=50.0), _key("free", MANAGER)]
    await _publish(writer, dp, backend_urls[0], keys=keys, cluster=cluster, require_api_keys=True)
    body = {"model": "llama3.2", "prompt": "hi", "stream": False}
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=dp.url, headers={"X-Api-Key": KEY}) as http:
        answers = [await http.post("/api/generate", json=body) for _ in range(8)]
    elapsed = time.monotonic() - started
    accepted = [a for a in answers if a.status_code == 200]
    limited = [a for a in answers if a.status_code == 429]
    assert len(accepted) + len(limited) == 8
    assert 2 <= len(accepted) <= 2 + 2 * elapsed  # its bucket: two tokens, two more a second
    assert limited, "the key's rate was never enforced"
    assert 1 <= int(limited[0].headers["retry-after"]) <= 60
    assert "rate limit of API key 'k' exceeded" in limited[0].json()["error"]
    with pytest.raises(openai.RateLimitError) as openai_limited:
        for _ in range(4):
            await _openai(dp, KEY).chat.completions.create(model="llama3.2", messages=CHAT)  # type: ignore[arg-type]
    assert openai_limited.value.body["code"] == "rate_limit_exceeded"  # type: ignore[index]
    free = ollama.AsyncClient(host=dp.url, headers={"X-Api-Key": MANAGER})  # a key without a limit
    for _ in range(10):
        await free.generate(model="llama3.2", prompt="hi")

    report = dp.app.sync.report()
    assert report.start_id
    usage = report.key_usage
    total = usage["k"].requests + usage["k"].rate_limited
    assert usage["k"].requests >= len(accepted) and usage["k"].rate_limited >= len(limited) + 1
    assert total >= 8 + 1
    assert (usage["free"].requests, usage["free"].rate_limited) == (10, 0)


async def _raw(url: str, request: bytes) -> tuple[int, bytes]:
    """Send ``request`` over a plain socket; the status and body of the answer (read to the end)."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def test_http10_gets_505_unless_the_frontend_allows_it(
    dp: RunningDataPlane, writer: SnapshotWriter, backend_urls: list[str]
) -> None:
    chat = b'{"model": "llama3.2", "messages": [], "stream": false}'
    post = b"POST /api/chat HTTP/1.0\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(chat), chat)
    await _publish(writer, dp, backend_urls[0])  # BlockHttp10 is on by default
    status, body = await _raw(dp.url, post)
    assert status == 505 and b"BlockHttp10" in body and body.startswith(b'{"error":"HTTP/1.0')
    status, body = await _raw(dp.url, b"GET /v1/models HTTP/1.0\r\nHost: x\r\n\r\n")
    assert status == 505 and b'"type":"server_error"' in body  # OpenAI's shape on an OpenAI path
    assert (await _raw(dp.url, b"GET / HTTP/1.0\r\n\r\n"))[0] == 505
    assert (await _raw(dp.url, b"GET /healthz HTTP/1.0\r\n\r\n"))[0] == 200  # the data plane's own
    # Over HTTP/1.1 all is well.
    status, _ = await _raw(
        dp.url, post.replace(b"HTTP/1.0", b"HTTP/1.1", 1).replace(b"Host: x", b"Host: x\r\nConnection: close")
    )
    assert status == 200

    await _publish(writer, dp, backend_urls[0], block_http10=False)
    status, body = await _raw(dp.url, post)
    assert status == 200 and b'"done":true' in body
