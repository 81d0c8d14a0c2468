"""The simulator's /api/blobs, /api/create and /api/push, through the official ollama client."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import ollama
import pytest


async def test_a_blob_uploads_once_and_a_model_is_created_from_it(ollama_url: str, tmp_path: Path) -> None:
    client = ollama.AsyncClient(host=ollama_url)
    weights = tmp_path / "tiny.gguf"
    weights.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    digest = await client.create_blob(weights)
    assert digest == "sha256:" + hashlib.sha256(weights.read_bytes()).hexdigest()
    async with httpx.AsyncClient(base_url=ollama_url) as http:
        assert (await http.head(f"/api/blobs/{digest}")).status_code == 200
        assert (await http.head(f"/api/blobs/sha256:{'0' * 64}")).status_code == 404
        assert (await http.head("/api/blobs/nonsense")).status_code == 400
        again = await http.post(f"/api/blobs/{digest}", content=weights.read_bytes())
        assert again.status_code == 200  # already there
        wrong = await http.post(f"/api/blobs/sha256:{'1' * 64}", content=b"other bytes")
        assert wrong.status_code == 400 and "digest mismatch" in wrong.json()["error"]

    parts = [p async for p in await client.create("tiny:1b", files={"tiny.gguf": digest}, stream=True)]
    assert parts[-1].status == "success"
    assert any(p.status == f"using existing layer {digest}" for p in parts)
    names = {m.model for m in (await client.list()).models}
    assert "tiny:1b" in names


async def test_create_from_an_installed_model_and_its_errors(ollama_url: str) -> None:
    client = ollama.AsyncClient(host=ollama_url)
    done = await client.create("helper", from_="llama3.2", system="You help.")
    assert done.status == "success"
    shown = await client.show("helper")
    assert shown.details is not None and shown.details.family == "llama"
    with pytest.raises(ollama.ResponseError) as missing_base:
        await client.create("other", from_="no-such-model")
    assert missing_base.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as missing_blob:
        await client.create("other", files={"x.gguf": "sha256:" + "2" * 64})
    assert missing_blob.value.status_code == 400 and "not found" in missing_blob.value.error


async def test_push_streams_progress_for_an_installed_model(ollama_url: str) -> None:
    client = ollama.AsyncClient(host=ollama_url)
    parts = [p async for p in await client.push("llama3.2", stream=True)]
    assert parts[0].status == "retrieving manifest" and parts[-1].status == "success"
    assert any(p.completed and p.total and p.completed < p.total for p in parts)
    with pytest.raises(ollama.ResponseError) as missing:
        await client.push("not-installed")
    assert missing.value.status_code == 404
