"""Ollama's model-authoring routes: HEAD|POST /api/blobs/:digest, /api/create and /api/push.

Blobs are kept per simulator (digest -> size; the bytes themselves are not needed), so a create that
names a blob uploaded to another server fails the way Ollama's does. A created model gets a card of
its own name, or its ``from`` model's facts under the new name. A push has no registry to talk to:
it succeeds for an installed model (progress like Ollama's) unless the name contains ``missing``.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from typing import Any

import msgspec

from ollamaflow.sim import ollama_chunks
from ollamaflow.sim.asgi import JSON, NDJSON, ApiError, Request, Streamer, send_body
from ollamaflow.sim.models import ModelCard, is_valid_ollama_name
from ollamaflow.sim.ollama_models import UNPULLABLE
from ollamaflow.sim.ollama_wire import decode
from ollamaflow.sim.state import SimState
from ollamaflow.sim.streaming import guarded
from ollamaflow.sim.timing import Pace

__all__ = ["BLOB_PREFIX", "blob", "create", "push"]

BLOB_PREFIX = "/api/blobs/"
_DIGEST = re.compile(r"^sha256[:-]([0-9a-fA-F]{64})$")


class CreateRequest(msgspec.Struct, kw_only=True, rename={"from_": "from"}):
    model: str = ""
    name: str = ""  # the legacy field
    from_: str = ""
    files: dict[str, str] = {}
    adapters: dict[str, str] = {}
    template: str = ""
    system: str = ""
    quantize: str = ""
    stream: bool | None = None


class PushRequest(msgspec.Struct, kw_only=True):
    model: str = ""
    name: str = ""
    insecure: bool = False
    stream: bool | None = None


def _digest_of(path: str) -> str:
    """``sha256:<hex>`` from the route's digest (Ollama accepts ``sha256-`` too); 400 if malformed."""
    found = _DIGEST.match(path[len(BLOB_PREFIX) :])
    if found is None:
        raise ApiError(400, f"invalid digest format: {path[len(BLOB_PREFIX) :]!r}")
    return "sha256:" + found.group(1).lower()


async def blob(req: Request, state: SimState) -> None:
    """HEAD: 200 if the blob is here, else 404. POST: store it (201), 200 if it was here already."""
    digest = _digest_of(req.path)
    if req.head:
        status = 200 if digest in state.blobs else 404
        await send_body(req.send, status, None, b"", head=True)
        return
    got = "sha256:" + hashlib.sha256(req.body).hexdigest()
    if got != digest:
        raise ApiError(400, f"digest mismatch, expected {digest}, got {got}")
    status = 200 if digest in state.blobs else 201
    state.blobs[digest] = len(req.body)
    await send_body(req.send, status, None, b"")


def _create_steps(body: CreateRequest, base: ModelCard | None, state: SimState) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    if base is not None:
        steps.append({"status": f"using existing layer sha256:{base.digest}"})
    for name, digest in body.files.items():
        if not digest.startswith("sha256:") or digest not in state.blobs:
            raise ApiError(400, f"file {name} with digest {digest} not found: upload it first")
        steps.append({"status": "parsing GGUF"})
        steps.append({"status": f"using existing layer {digest}"})
    if body.quantize:
        steps.append({"status": f"quantizing F16 model to {body.quantize.upper()}"})
    for part in (body.template, body.system):
        if part:
            layer = hashlib.sha256(part.encode()).hexdigest()
            steps.append({"status": f"creating new layer sha256:{layer}"})
    steps += [{"status": "writing manifest"}, {"status": "success"}]
    return steps


async def create(req: Request, state: SimState) -> None:
    body = decode(req.body, CreateRequest)
    name = body.model or body.name
    if not name or not is_valid_ollama_name(name):
        raise ApiError(400, "invalid model name")
    base = None
    if body.from_:
        base = state.find_model(body.from_)
        if base is None:
            raise ApiError(404, f"model '{body.from_}' not found")
    elif not body.files:
        raise ApiError(400, "neither 'from' or 'files' was specified")
    steps = _create_steps(body, base, state)

    def install() -> None:
        state.store.add(name, time.time(), like=base)

    await _progress(req, state, steps, body.stream, install)


def _push_steps(card: ModelCard) -> Iterator[dict[str, Any]]:
    yield {"status": "retrieving manifest"}
    digest = "sha256:" + card.digest
    yield {"status": "starting upload", "digest": digest, "total": card.size}
    for step in range(1, 5):
        done = card.size * step // 4
        status = f"pushing {card.digest[:12]}"
        yield {"status": status, "digest": digest, "total": card.size, "completed": done}
    yield {"status": "pushing manifest"}
    yield {"status": "success"}


async def push(req: Request, state: SimState) -> None:
    body = decode(req.body, PushRequest)
    name = body.model or body.name
    if not name or not is_valid_ollama_name(name):
        raise ApiError(400, "invalid model name")
    card = state.find_model(name)
    if card is None:
        raise ApiError(404, f"model '{name}' not found")
    steps = list(_push_steps(card))
    if UNPULLABLE in name.lower():  # no such repository on the simulated registry
        steps = [steps[0], {"error": "file does not exist"}]
    await _progress(req, state, steps, body.stream, lambda: None)


async def _progress(
    req: Request, state: SimState, steps: list[dict[str, Any]], stream: bool | None, finish: Any
) -> None:
    """Send progress lines (or, with ``stream: false``, the last one), then run ``finish``."""
    pace = Pace(state.knobs)
    failed = "error" in steps[-1]

    async def streamed() -> None:
        streamer = Streamer(req.send, NDJSON)
        await pace.first_byte()
        for index, step in enumerate(steps):
            await pace.chunk(index)
            await streamer.write(ollama_chunks.line(step))
        if not failed:
            finish()
        await streamer.end()

    async def whole() -> None:
        await pace.whole(len(steps))
        if not failed:
            finish()
        await send_body(req.send, 500 if failed else 200, JSON, ollama_chunks.encode(steps[-1]))

    await guarded(req, state, pace, streamed() if stream is not False else whole())
