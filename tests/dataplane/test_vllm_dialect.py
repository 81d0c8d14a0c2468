"""vLLM's extra sampling options reach vLLM-dialect backends only, through a running data plane.

An Ollama client's ``options`` (top_k, min_p, repeat_penalty) and ``think`` have no place in the
OpenAI API: a backend published with ``dialect="vllm"`` gets them as vLLM's fields, a plain
OpenAI-compatible backend does not (older vLLM and strict servers answer 400 to unknown keys).
The backend here records the exact JSON it receives and answers like an OpenAI server.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import ollama
from aiohttp import web

from shared.snapshot import BackendView, FrontendView, SnapshotContent
from tests.dataplane.harness import RunningDataPlane, SnapshotWriter

OPTIONS = {"temperature": 0.5, "top_k": 20, "min_p": 0.05, "repeat_penalty": 1.1, "num_predict": 7}
EXTRAS = ("top_k", "min_p", "repetition_penalty", "repeat_penalty", "chat_template_kwargs")


@contextlib.asynccontextmanager
async def openai_recorder() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """An OpenAI-compatible chat endpoint that keeps every request body it gets."""
    seen: list[dict[str, Any]] = []

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append(body)
        return web.json_response(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1,
                "model": body["model"],
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
            }
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", seen
    finally:
        await runner.cleanup()


async def _serve_only(writer: SnapshotWriter, dp: RunningDataPlane, url: str, dialect: str) -> None:
    backend = BackendView(
        id="b", base_url=url, api_format="OpenAI", models=("m",), models_known=True, dialect=dialect
    )
    frontend = FrontendView(id="f", hostname="*", backends=("b",))
    revision = dp.app.state.revision + 1
    await writer.publish(SnapshotContent(frontends=(frontend,), backends=(backend,)), revision)
    await dp.wait_revision(revision)


async def _ask(dp: RunningDataPlane) -> None:
    client = ollama.AsyncClient(host=dp.url)
    chat = await client.chat(
        model="m", messages=[{"role": "user", "content": "hi"}], options=OPTIONS, think=True, stream=False
    )
    assert chat.message.content == "ok"
    generated = await client.generate(model="m", prompt="hi", options=OPTIONS, stream=False)
    assert generated.response == "ok"


async def test_vllm_backend_gets_the_extras(dp: RunningDataPlane, writer: SnapshotWriter) -> None:
    async with openai_recorder() as (url, seen):
        await _serve_only(writer, dp, url, "vllm")
        await _ask(dp)
    assert len(seen) == 2
    for body in seen:
        assert (body["top_k"], body["min_p"], body["repetition_penalty"]) == (20, 0.05, 1.1)
        assert (body["temperature"], body["max_tokens"]) == (0.5, 7)
        assert "repeat_penalty" not in body
    assert seen[0]["chat_template_kwargs"] == {"enable_thinking": True}


async def test_plain_openai_backend_gets_none_of_them(dp: RunningDataPlane, writer: SnapshotWriter) -> None:
    async with openai_recorder() as (url, seen):
        await _serve_only(writer, dp, url, "")
        await _ask(dp)
        # A dialect this data plane does not know is treated as plain OpenAI.
        await _serve_only(writer, dp, url, "some-future-server")
        await _ask(dp)
    assert len(seen) == 4
    for body in seen:
        assert (body["temperature"], body["max_tokens"]) == (0.5, 7)
        assert not set(EXTRAS) & set(body), json.dumps(body)
