"""LangChain's Ollama integration (``langchain-ollama``) through a data plane, unchanged.

ChatOllama and OllamaEmbeddings are among the commonest ways programs reach an Ollama server, so they
must work against a frontend whatever format its backend speaks: an Ollama simulator (passed
through) and an OpenAI-format simulator (every request and stream translated). The data plane runs as
a real server with its snapshot published over NATS; the clients are LangChain's own, which sit on
the official ``ollama`` package.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage
from langchain_core.tools import tool
from langchain_ollama import ChatOllama, OllamaEmbeddings
from ollama import ResponseError
from pydantic import BaseModel

from dataplane.settings import DataPlaneSettings
from ollamaflow.sim import SimConfig, running_sim
from shared.snapshot import ApiFormat, BackendView, FrontendView, SnapshotContent
from tests.dataplane.harness import RunningDataPlane, SnapshotWriter, running_dataplane

FORMATS: list[ApiFormat] = ["Ollama", "OpenAI"]
QUESTION = [SystemMessage("Be brief."), HumanMessage("Tell me about load balancers.")]


@tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    return f"sunny in {city}"


class City(BaseModel):
    """A city and how many people live there."""

    name: str
    population: int


@pytest.fixture(params=FORMATS)
async def frontend(
    request: pytest.FixtureRequest, dp_settings: DataPlaneSettings, writer: SnapshotWriter
) -> AsyncIterator[str]:
    """A data plane whose one frontend has one simulated backend of the parameter's format."""
    backend_format: ApiFormat = request.param
    sim_format = "openai" if backend_format == "OpenAI" else "ollama"
    async with running_sim(SimConfig(format=sim_format)) as sim, running_dataplane(dp_settings) as dp:
        await _publish(writer, dp, sim, backend_format)
        yield dp.url


async def _publish(writer: SnapshotWriter, dp: RunningDataPlane, sim: str, api_format: ApiFormat) -> None:
    # The backend's inventory as the control plane would have read it: the simulator's models.
    backend = BackendView(
        id="sim", base_url=sim, api_format=api_format, models=SimConfig().models, models_known=True
    )
    content = SnapshotContent(
        frontends=(FrontendView(id="f", hostname="*", backends=("sim",)),), backends=(backend,)
    )
    await writer.publish(content, revision=1)
    await dp.wait_revision(1)


async def test_chat_invoke_and_stream(frontend: str) -> None:
    chat = ChatOllama(model="llama3.2", base_url=frontend)

    reply = await chat.ainvoke(QUESTION)
    assert isinstance(reply, AIMessage)
    assert isinstance(reply.content, str) and reply.content
    assert reply.response_metadata["done"] is True
    assert reply.response_metadata["done_reason"] == "stop"
    assert reply.usage_metadata is not None
    assert reply.usage_metadata["input_tokens"] > 0 and reply.usage_metadata["output_tokens"] > 0

    chunks = [chunk async for chunk in chat.astream(QUESTION)]
    assert all(isinstance(chunk, AIMessageChunk) for chunk in chunks)
    # Streamed in pieces, and the pieces add up to the same answer as the whole reply.
    assert len([c for c in chunks if c.content]) > 1
    assert "".join(str(c.content) for c in chunks) == reply.content
    merged = sum(chunks[1:], chunks[0])
    assert merged.usage_metadata is not None and merged.usage_metadata["output_tokens"] > 0
    assert merged.response_metadata["done_reason"] == "stop"

    # The synchronous client too (in a thread: the simulator answers on this test's event loop).
    assert (await asyncio.to_thread(chat.invoke, QUESTION)).content == reply.content


async def test_options_cut_the_answer_short(frontend: str) -> None:
    # num_predict travels in Ollama's options (max_tokens for an OpenAI backend); the simulator stops
    # there and says so.
    chat = ChatOllama(model="llama3.2", base_url=frontend, num_predict=3, temperature=0.1)
    reply = await chat.ainvoke(QUESTION)
    assert reply.response_metadata["done_reason"] == "length"
    assert reply.usage_metadata is not None and reply.usage_metadata["output_tokens"] == 3


async def test_bound_tools_are_called(frontend: str) -> None:
    chat = ChatOllama(model="llama3.2", base_url=frontend).bind_tools([get_weather])
    # The simulator calls each offered tool that the last user message names.
    question = [HumanMessage("Use get_weather: what is it like in Paris?")]

    reply = await chat.ainvoke(question)
    assert isinstance(reply, AIMessage)
    assert [call["name"] for call in reply.tool_calls] == ["get_weather"]
    assert isinstance(reply.tool_calls[0]["args"]["city"], str)

    streamed: AIMessageChunk | None = None
    async for chunk in chat.astream(question):
        assert isinstance(chunk, AIMessageChunk)
        streamed = chunk if streamed is None else streamed + chunk
    assert streamed is not None
    assert [call["name"] for call in streamed.tool_calls] == ["get_weather"]
    assert streamed.tool_calls[0]["args"] == reply.tool_calls[0]["args"]

    # The tool's answer goes back, and the model answers in words.
    result = get_weather.invoke(reply.tool_calls[0])
    final = await chat.ainvoke([*question, reply, result])
    assert isinstance(final.content, str) and final.content and not final.tool_calls


async def test_structured_output_follows_the_schema(frontend: str) -> None:
    # A JSON schema in Ollama's "format" (response_format json_schema for an OpenAI backend).
    chat = ChatOllama(model="llama3.2", base_url=frontend)
    city = await chat.with_structured_output(City, method="json_schema").ainvoke("Describe Paris.")
    assert isinstance(city, City)
    assert city.name and isinstance(city.population, int)
    # format="json": any JSON object.
    reply = await ChatOllama(model="llama3.2", base_url=frontend, format="json").ainvoke("Describe Paris.")
    assert isinstance(json.loads(str(reply.content)), dict)


async def test_embeddings(frontend: str) -> None:
    embeddings = OllamaEmbeddings(model="all-minilm", base_url=frontend)
    vectors = await embeddings.aembed_documents(["load balancers", "inference servers"])
    assert len(vectors) == 2
    assert len(vectors[0]) == len(vectors[1]) > 8
    assert vectors[0] != vectors[1]
    # Same text, same vector: the query path and the document path reach the same model.
    assert await embeddings.aembed_query("load balancers") == pytest.approx(vectors[0])
    assert await asyncio.to_thread(embeddings.embed_query, "load balancers") == pytest.approx(vectors[0])


async def test_an_unknown_model_is_ollamas_own_404(frontend: str) -> None:
    with pytest.raises(ResponseError) as caught:
        await ChatOllama(model="no-such-model", base_url=frontend).ainvoke(QUESTION)
    assert caught.value.status_code == 404
    assert "no-such-model" in caught.value.error
