"""The OpenAI routes: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models[/{id}]."""

from __future__ import annotations

import os
import time

import msgspec

from ollamaflow.sim import content, openai_chunks
from ollamaflow.sim.asgi import OPENAI_JSON, SSE, ApiError, Request, Streamer, send_body
from ollamaflow.sim.dialect import Dialect
from ollamaflow.sim.models import ModelCard
from ollamaflow.sim.openai_checks import (
    check_messages,
    completion_prompts,
    embedding_inputs,
    encoding_format,
    json_format,
    thinks,
    token_limit,
    tool_choice,
)
from ollamaflow.sim.openai_wire import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    decode,
    message_text,
)
from ollamaflow.sim.plan import Ask
from ollamaflow.sim.state import SimState
from ollamaflow.sim.streaming import Generation, guarded, stream_chunks
from ollamaflow.sim.wire_tools import plan_tools
from shared.wire import openai as openai_wire

__all__ = ["chat_completions", "completions", "embeddings", "get_model", "list_models"]

_CACHE_HEADERS = ((b"cache-control", b"no-cache"),)


_json = msgspec.json.Encoder().encode


def _find(state: SimState, dialect: Dialect, name: str, *, embeddings: bool = False) -> ModelCard:
    if not name:
        raise ApiError(400, "model is required" if dialect.ollama else "you must provide a model parameter")
    card = state.find_model(name)
    if card is not None:
        return card
    if not dialect.ollama:
        raise ApiError(
            404, f"The model `{name}` does not exist.", param="model", code=dialect.model_not_found_code
        )
    if embeddings:
        raise ApiError(404, f'model "{name}" not found, try pulling it first')
    raise ApiError(404, f"model '{name}' not found")


def _stream_error(
    dialect: Dialect, failure: ApiError | None, chunks: openai_chunks.ChatChunks | None
) -> bytes | None:
    """What a stream that fails after it started sends instead of its second half."""
    if failure is None:
        return None
    if dialect.reports_stream_errors:
        detail = {
            "message": failure.message,
            "type": openai_wire.error_type_for_status(failure.status),
            "param": None,
            "code": failure.code,
        }
        return openai_chunks.event({"error": detail}) + openai_chunks.DONE
    # Ollama's /v1 layer turns a native error line into one empty delta and ends the body.
    return chunks.delta({"role": "assistant", "content": ""}) if chunks else b""


def _ids(prefix: str) -> tuple[str, int]:
    return prefix + os.urandom(12).hex(), int(time.time())


async def chat_completions(req: Request, state: SimState, dialect: Dialect) -> None:
    body = decode(req.body, ChatCompletionRequest)
    card = _find(state, dialect, body.model)
    if card.embedding:
        raise ApiError(
            400,
            f'"{body.model}" does not support chat'
            if dialect.ollama
            else f"The model `{body.model}` does not support Chat Completions API",
        )
    if not body.messages:
        raise ApiError(400, "[] is too short - 'messages'", param="messages")
    check_messages(body.messages, dialect)
    texts = [message_text(message) for message in body.messages]
    last = body.messages[-1]
    ask = Ask(
        text="\n".join(texts),
        prompt_tokens=sum(content.count_tokens(text) + 4 for text in texts),
        answer_tokens=state.config.answer_tokens,
        last_user=texts[-1] if last.role == "user" else None,
        tools=plan_tools(body.tools),
        tool_choice=tool_choice(body.tool_choice, dialect),
        limit=token_limit(body.max_tokens, body.max_completion_tokens, dialect),
        stop=(body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ()),
        json_format=json_format(body.response_format),
        think=thinks(body.reasoning_effort, body.model, card.thinking, dialect),
    )
    plan = state.plans.plan(ask)
    stream = bool(body.stream)
    gen = Generation(state, card, state.config.keep_alive_s, stream=stream)
    id_, created = _ids("chatcmpl-")
    with gen:
        if stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            chunks = openai_chunks.ChatChunks(id_, created, body.model, dialect, include_usage=include_usage)
            count = chunks.count(plan, dialect)
            work = stream_chunks(
                gen.pace,
                Streamer(req.send, SSE, _CACHE_HEADERS),
                state,
                chunks.chunks(plan),
                lambda: chunks.finish(plan),
                count=count,
                fail_with=_stream_error(dialect, gen.failure, chunks),
            )
        else:
            count = 0
            reply = openai_chunks.chat_whole(id_, created, body.model, dialect, plan)
            work = _whole(req, gen, openai_chunks.ChatChunks.count(plan, dialect), _json(reply))
        await guarded(req, state, gen.pace, work, chunks=count)


async def _whole(req: Request, gen: Generation, chunks: int, body: bytes) -> None:
    await gen.pace.whole(chunks)
    await send_body(req.send, 200, OPENAI_JSON, body)


async def completions(req: Request, state: SimState, dialect: Dialect) -> None:
    body = decode(req.body, CompletionRequest)
    card = _find(state, dialect, body.model)
    if card.embedding:
        raise ApiError(
            400,
            f'"{body.model}" does not support generate'
            if dialect.ollama
            else f"The model `{body.model}` does not support Completions API",
        )
    prompts = completion_prompts(body.prompt, dialect)
    limit = (
        token_limit(body.max_tokens, None, dialect)
        if body.max_tokens is not None
        else dialect.completion_default_max_tokens
    )
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    plans = [
        (
            prompt if body.echo else "",
            state.plans.plan(
                Ask(
                    text=prompt + (body.suffix or ""),
                    prompt_tokens=content.count_tokens(prompt) + 1,
                    answer_tokens=state.config.answer_tokens,
                    limit=limit,
                    stop=stop,
                )
            ),
        )
        for prompt in prompts
    ]
    stream = bool(body.stream)
    gen = Generation(state, card, state.config.keep_alive_s, stream=stream)
    id_, created = _ids("cmpl-")
    with gen:
        if stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            chunks = openai_chunks.CompletionChunks(
                id_, created, body.model, dialect, include_usage=include_usage
            )
            count = chunks.count(plans)
            work = stream_chunks(
                gen.pace,
                Streamer(req.send, SSE, _CACHE_HEADERS),
                state,
                chunks.chunks(plans),
                lambda: chunks.finish(plans),
                count=count,
                fail_with=_stream_error(dialect, gen.failure, None),
            )
        else:
            count = 0
            reply = openai_chunks.completion_whole(id_, created, body.model, dialect, plans)
            work = _whole(req, gen, openai_chunks.CompletionChunks.count(plans), _json(reply))
        await guarded(req, state, gen.pace, work, chunks=count)


async def embeddings(req: Request, state: SimState, dialect: Dialect) -> None:
    body = decode(req.body, EmbeddingRequest)
    card = _find(state, dialect, body.model, embeddings=True)
    if dialect.embeddings_need_embedding_model and not card.embedding:
        raise ApiError(400, f"The model `{body.model}` does not support Embeddings API")
    inputs = embedding_inputs(body.input, dialect)
    as_base64 = encoding_format(body.encoding_format)
    size = card.embedding_length
    if body.dimensions and 0 < body.dimensions < size:
        size = body.dimensions
    gen = Generation(state, card, state.config.keep_alive_s, stream=False)

    async def reply() -> None:
        await gen.pace.first_byte()
        data = []
        for index, text in enumerate(inputs):
            vector = content.embedding(text, size)
            value: object = content.embedding_base64(vector) if as_base64 else vector
            data.append({"object": "embedding", "embedding": value, "index": index})
        tokens = sum(content.count_tokens(text) for text in inputs)
        answer = {
            "object": "list",
            "data": data,
            "model": body.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        await send_body(req.send, 200, OPENAI_JSON, _json(answer))

    with gen:
        await guarded(req, state, gen.pace, reply())


def _model_object(name: str, created: float, dialect: Dialect) -> dict[str, object]:
    model: dict[str, object] = {
        "id": name,
        "object": "model",
        "created": int(created),
        "owned_by": dialect.owned_by,
    }
    if dialect.max_model_len is not None:
        model.update(root=name, parent=None, max_model_len=dialect.max_model_len)
    return model


async def list_models(req: Request, state: SimState, dialect: Dialect) -> None:
    data: list[dict[str, object]] | None = [
        _model_object(card.name, modified, dialect) for card, modified in state.store.installed()
    ]
    if not data and dialect.null_empty_model_list:
        data = None
    await send_body(req.send, 200, OPENAI_JSON, _json({"object": "list", "data": data}))


async def get_model(req: Request, state: SimState, dialect: Dialect) -> None:
    name = req.path[len("/v1/models/") :]
    card = _find(state, dialect, name)
    await send_body(
        req.send, 200, OPENAI_JSON, _json(_model_object(name, state.store.modified_at(card), dialect))
    )
