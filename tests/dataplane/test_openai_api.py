"""The OpenAI API on every frontend, and both APIs across formats, with the official clients.

``openai`` in front of an Ollama simulator (translated) and of an OpenAI-format simulator (passed
through); ``ollama`` in front of an OpenAI-format simulator (translated). Streams arrive chunk by
chunk; errors come in the client's own shape.
"""

from __future__ import annotations

import asyncio
import base64
import struct

import httpx
import ollama
import openai
import pytest

from ollamaflow.sim import SimConfig, running_sim
from shared.snapshot import ApiFormat, BackendView, FrontendView, SnapshotContent
from tests.dataplane.harness import RunningDataPlane, SnapshotWriter, eventually

MESSAGES = [{"role": "user", "content": "Tell me about load balancers."}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


async def _serve(writer: SnapshotWriter, dp: RunningDataPlane, url: str, api_format: ApiFormat) -> None:
    """One backend whose inventory the control plane has read: the simulator's default models."""
    backend = BackendView(
        id="sim", base_url=url, api_format=api_format, models=SimConfig().models, models_known=True
    )
    frontend = FrontendView(id="f", hostname="*", backends=("sim",))
    revision = dp.app.state.revision + 1
    await writer.publish(SnapshotContent(frontends=(frontend,), backends=(backend,)), revision)
    await dp.wait_revision(revision)


def _openai(dp: RunningDataPlane) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=dp.url + "/v1", api_key="unused", max_retries=0)


@pytest.mark.parametrize("backend_format", ["Ollama", "OpenAI"])
async def test_openai_client_chats_completes_and_embeds(
    dp: RunningDataPlane, writer: SnapshotWriter, backend_format: ApiFormat
) -> None:
    sim_format = "openai" if backend_format == "OpenAI" else "ollama"
    # Passed through untouched, so an OpenAI-format backend gets the name exactly as it lists it.
    chat_model = "llama3.2:latest" if backend_format == "OpenAI" else "llama3.2"
    embed_model = "all-minilm:latest" if backend_format == "OpenAI" else "all-minilm"
    async with running_sim(SimConfig(format=sim_format)) as sim:
        await _serve(writer, dp, sim, backend_format)
        client = _openai(dp)

        raw = await client.chat.completions.with_raw_response.create(model=chat_model, messages=MESSAGES)  # type: ignore[arg-type]
        assert raw.headers["x-ollamaflow-backend"] == "sim"
        chat = raw.parse()
        assert chat.object == "chat.completion"
        assert chat.choices[0].message.content
        assert chat.choices[0].finish_reason == "stop"

        stream = await client.chat.completions.create(
            model=chat_model,
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert len(chunks) > 2 and text
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0

        tools = await client.chat.completions.create(
            model=chat_model,
            messages=[{"role": "user", "content": "Use get_weather: what is it like in Paris?"}],
            tools=[WEATHER_TOOL],  # type: ignore[list-item]
        )
        calls = tools.choices[0].message.tool_calls
        assert calls and calls[0].function.name == "get_weather"  # type: ignore[union-attr]
        assert tools.choices[0].finish_reason == "tool_calls"

        completion = await client.completions.create(model=chat_model, prompt="Why is the sky blue?")
        assert completion.object == "text_completion" and completion.choices[0].text

        floats = await client.embeddings.create(model=embed_model, input=["a", "b"], encoding_format="float")
        assert len(floats.data) == 2 and len(floats.data[0].embedding) > 8
        # Base64 asked for explicitly: the raw body holds little-endian float32 bytes.
        raw_embed = await client.embeddings.with_raw_response.create(
            model=embed_model, input="a", encoding_format="base64"
        )
        encoded = raw_embed.http_response.json()["data"][0]["embedding"]
        assert isinstance(encoded, str)
        decoded = struct.unpack(f"<{len(base64.b64decode(encoded)) // 4}f", base64.b64decode(encoded))
        assert list(decoded) == pytest.approx(floats.data[0].embedding, rel=1e-5)

        with pytest.raises(openai.NotFoundError) as caught:
            await client.chat.completions.create(model="no-such-model", messages=MESSAGES)  # type: ignore[arg-type]
        assert caught.value.code == "model_not_found"


async def test_openai_request_an_ollama_backend_cannot_express_is_a_400_in_openai_shape(
    dp: RunningDataPlane, writer: SnapshotWriter
) -> None:
    async with running_sim() as sim:
        await _serve(writer, dp, sim, "Ollama")
        with pytest.raises(openai.BadRequestError) as caught:
            await _openai(dp).chat.completions.create(model="llama3.2", messages=MESSAGES, n=2)  # type: ignore[arg-type]
        assert caught.value.param == "n"


async def test_ollama_client_in_front_of_an_openai_backend(
    dp: RunningDataPlane, writer: SnapshotWriter
) -> None:
    async with running_sim(SimConfig(format="openai")) as sim:
        await _serve(writer, dp, sim, "OpenAI")
        client = ollama.AsyncClient(host=dp.url)  # Ollama's short names reach it as it lists them
        chat = await client.chat(model="llama3.2", messages=MESSAGES)
        assert chat.message.content and chat.done
        parts = [p async for p in await client.chat(model="llama3.2", messages=MESSAGES, stream=True)]
        assert len(parts) > 2 and "".join(p.message.content or "" for p in parts)
        assert parts[-1].done and not any(p.done for p in parts[:-1])
        generated = await client.generate(model="llama3.2", prompt="Why is the sky blue?")
        assert generated.response and generated.done
        embedded = await client.embed(model="all-minilm", input=["a", "b"])
        assert len(embedded.embeddings) == 2 and len(embedded.embeddings[0]) > 8
        with pytest.raises(ollama.ResponseError) as caught:
            await client.chat(model="no-such-model", messages=MESSAGES)
        assert caught.value.status_code == 404


async def test_a_translated_stream_that_breaks_ends_with_an_error_not_a_done(
    dp: RunningDataPlane, writer: SnapshotWriter
) -> None:
    async with running_sim(SimConfig(fail_rate=1.0, fail_mid_stream=True, answer_tokens=12)) as sim:
        await _serve(writer, dp, sim, "Ollama")
        body = {"model": "llama3.2", "messages": MESSAGES, "stream": True}
        async with httpx.AsyncClient(base_url=dp.url) as client:
            answer = await client.post("/v1/chat/completions", json=body)
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        events = [line for line in answer.text.splitlines() if line.startswith("data: ")]
        assert '"error"' in events[-1]
        assert "[DONE]" not in answer.text


async def test_a_client_that_leaves_a_translated_stream_cancels_the_upstream_request(
    dp: RunningDataPlane, writer: SnapshotWriter
) -> None:
    async with running_sim(SimConfig(format="openai", tokens_per_second=5, answer_tokens=50)) as sim:
        await _serve(writer, dp, sim, "OpenAI")
        body = {"model": "llama3.2", "messages": MESSAGES}  # Ollama streams by default
        async with httpx.AsyncClient(timeout=30) as client:
            async with client.stream("POST", dp.url + "/api/chat", json=body) as resp:
                assert resp.headers["content-type"].startswith("application/x-ndjson")
                await anext(resp.aiter_lines())
            # Leaving the block closed the connection after one of 50 chunks (10 s of generation).
            await eventually(lambda: dp.app.traffic.in_flight_by_backend() == {}, 5, "data plane released")
            # The simulator sees the closed connection at its next chunk (paced: up to 0.2 s later).
            for _ in range(50):
                stats = (await client.get(sim + "/_sim/stats")).json()
                if stats["in_flight"] == 0:
                    break
                await asyncio.sleep(0.1)
            assert stats["in_flight"] == 0
            assert stats["disconnects"] == 1


async def test_one_pool_of_both_formats_answers_each_client_in_its_own(
    dp: RunningDataPlane, writer: SnapshotWriter
) -> None:
    async with running_sim() as native, running_sim(SimConfig(format="openai")) as compatible:
        models = SimConfig().models
        backends = (
            BackendView(id="native", base_url=native, models=models, models_known=True),
            BackendView(
                id="compatible", base_url=compatible, api_format="OpenAI", models=models, models_known=True
            ),
        )
        frontend = FrontendView(id="f", hostname="*", backends=("native", "compatible"))
        revision = dp.app.state.revision + 1
        await writer.publish(SnapshotContent(frontends=(frontend,), backends=backends), revision)
        await dp.wait_revision(revision)
        seen: set[str] = set()
        for _ in range(2):  # round robin: each client's two requests go one to each backend
            raw = await _openai(dp).chat.completions.with_raw_response.create(
                model="llama3.2",
                messages=MESSAGES,  # type: ignore[arg-type]
            )
            assert raw.parse().choices[0].message.content
            seen.add(raw.headers["x-ollamaflow-backend"])
        assert seen == {"native", "compatible"}
        for _ in range(2):
            reply = await ollama.AsyncClient(host=dp.url).generate(model="llama3.2", prompt="Why?")
            assert reply.response and reply.done
        async with httpx.AsyncClient() as client:
            for sim in (native, compatible):
                assert (await client.get(sim + "/_sim/stats")).json()["requests_total"] == 2
