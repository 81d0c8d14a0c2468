"""Ollama's inference routes: /api/generate, /api/chat, /api/embed and /api/embeddings."""

from __future__ import annotations

import time
from collections.abc import Iterator

from ollamaflow.sim import content, ollama_chunks
from ollamaflow.sim.asgi import JSON, NDJSON, ApiError, Request, Streamer, send_body
from ollamaflow.sim.models import ModelCard
from ollamaflow.sim.ollama_wire import (
    ChatRequest,
    EmbeddingsRequest,
    EmbedRequest,
    GenerateRequest,
    check_format,
    check_images,
    decode,
    keep_alive_seconds,
    read_options,
    think_value,
)
from ollamaflow.sim.plan import Ask, Plan
from ollamaflow.sim.state import SimState
from ollamaflow.sim.streaming import Generation, guarded, stream_chunks
from ollamaflow.sim.wire_tools import plan_tools

__all__ = ["chat", "embed", "embeddings", "generate"]


def _completion_model(state: SimState, name: str, action: str) -> ModelCard:
    if not name:
        raise ApiError(400, "model is required")
    card = state.find_model(name)
    if card is None:
        raise ApiError(404, f"model '{name}' not found")
    if card.embedding:
        raise ApiError(400, f'"{name}" does not support {action}')
    return card


def _scheduled_model(state: SimState, name: str) -> ModelCard:
    """Embedding routes find their model through Ollama's scheduler, which words 404s differently."""
    if not name:
        raise ApiError(400, "model is required")
    card = state.find_model(name)
    if card is None:
        raise ApiError(404, f'model "{name}" not found, try pulling it first')
    return card


async def _load_or_unload(
    req: Request, state: SimState, card: ModelCard, model: str, keep_alive: float, *, chat: bool
) -> None:
    """Empty prompt/messages: load the model (keep_alive 0: unload it); one JSON reply, never a stream."""
    if keep_alive == 0:
        state.store.unload(card)
        reason = "unload"
    else:
        state.store.keep_loaded(card, keep_alive, time.time())
        reason = "load"
    reply = ollama_chunks.load_reply(model, state.clock.now(), reason, chat=chat)
    await send_body(req.send, 200, JSON, ollama_chunks.encode(reply))


class _Render:
    """Builds the lines of one chat or generate reply."""

    def __init__(self, state: SimState, model: str, *, chat: bool, context: list[int] | None = None) -> None:
        self.now = state.clock.now
        self.model = model
        self.chat = chat
        self.context = context

    def lines(self, plan: Plan) -> Iterator[bytes]:
        pieces = ollama_chunks.PieceLines(self.model, chat=self.chat)
        for text in plan.thinking:
            yield pieces.piece(self.now(), text, thinking=True)
        for text in plan.content:
            yield pieces.piece(self.now(), text)
        if plan.tool_calls:
            yield ollama_chunks.chat_tool_calls(self.model, self.now(), plan.tool_calls)

    @staticmethod
    def count(plan: Plan) -> int:
        return len(plan.thinking) + len(plan.content) + (1 if plan.tool_calls else 0)

    def final(self, plan: Plan, gen: Generation) -> bytes:
        metrics, now = gen.pace.metrics(plan.prompt_tokens, plan.eval_count), self.now()
        if self.chat:
            reply = ollama_chunks.chat_final(self.model, now, plan.done_reason, metrics)
        else:
            reply = ollama_chunks.generate_final(self.model, now, plan.done_reason, metrics, self.context)
        return ollama_chunks.line(reply)

    def whole(self, plan: Plan, gen: Generation) -> bytes:
        metrics = gen.pace.metrics(plan.prompt_tokens, plan.eval_count)
        if self.chat:
            reply = ollama_chunks.chat_whole(self.model, self.now(), plan, metrics)
        else:
            reply = ollama_chunks.generate_whole(self.model, self.now(), plan, metrics, self.context)
        return ollama_chunks.encode(reply)


async def _answer(
    req: Request, state: SimState, gen: Generation, plan: Plan, render: _Render, stream: bool
) -> None:
    with gen:
        if stream:
            streamer = Streamer(req.send, NDJSON)
            work = stream_chunks(
                gen.pace,
                streamer,
                state,
                render.lines(plan),
                lambda: render.final(plan, gen),
                count=render.count(plan),
                fail_with=ollama_chunks.line({"error": gen.failure.message}) if gen.failure else None,
            )
        else:
            work = _whole(req, gen, plan, render)
        await guarded(req, state, gen.pace, work, chunks=render.count(plan) if stream else 0)


async def _whole(req: Request, gen: Generation, plan: Plan, render: _Render) -> None:
    await gen.pace.whole(render.count(plan))
    await send_body(req.send, 200, JSON, render.whole(plan, gen))


async def generate(req: Request, state: SimState) -> None:
    body = decode(req.body, GenerateRequest)
    card = _completion_model(state, body.model, "generate")
    if body.raw and (body.template or body.system or body.context):
        raise ApiError(400, "raw mode does not support template, system, or context")
    limit, stop = read_options(body.options)
    keep_alive = keep_alive_seconds(body.keep_alive, state.config.keep_alive_s)
    think = think_value(body.think, body.model, card.thinking)
    json_format = check_format(body.format)
    check_images(body.images)
    if not body.prompt and not body.suffix:
        await _load_or_unload(req, state, card, body.model, keep_alive, chat=False)
        return
    text = body.prompt + body.suffix
    ask = Ask(
        text=text,
        prompt_tokens=content.count_tokens(text) + 4,
        answer_tokens=state.config.answer_tokens,
        limit=limit,
        stop=stop,
        json_format=json_format,
        think=think,
    )
    plan = state.plans.plan(ask)
    stream = body.stream is not False
    context = None if body.raw else content.context_tokens(text, plan.prompt_tokens + plan.eval_count)
    gen = Generation(state, card, keep_alive, stream=stream)
    await _answer(req, state, gen, plan, _Render(state, body.model, chat=False, context=context), stream)


async def chat(req: Request, state: SimState) -> None:
    body = decode(req.body, ChatRequest)
    card = _completion_model(state, body.model, "chat")
    limit, stop = read_options(body.options)
    keep_alive = keep_alive_seconds(body.keep_alive, state.config.keep_alive_s)
    think = think_value(body.think, body.model, card.thinking)
    json_format = check_format(body.format)
    messages = body.messages or []
    for message in messages:
        check_images(message.images)
    if not messages:
        await _load_or_unload(req, state, card, body.model, keep_alive, chat=True)
        return
    texts = [message.content or "" for message in messages]
    last = messages[-1]
    ask = Ask(
        text="\n".join(texts),
        prompt_tokens=sum(content.count_tokens(text) + 4 for text in texts),
        answer_tokens=state.config.answer_tokens,
        last_user=(last.content or "") if last.role.lower() == "user" else None,
        tools=plan_tools(body.tools),
        limit=limit,
        stop=stop,
        json_format=json_format,
        think=think,
    )
    stream = body.stream is not False
    gen = Generation(state, card, keep_alive, stream=stream)
    await _answer(req, state, gen, state.plans.plan(ask), _Render(state, body.model, chat=True), stream)


def _embed_inputs(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)  # type: ignore[arg-type]
    raise ApiError(400, "invalid input type")


async def embed(req: Request, state: SimState) -> None:
    body = decode(req.body, EmbedRequest)
    inputs = _embed_inputs(body.input)
    card = _scheduled_model(state, body.model)
    keep_alive = keep_alive_seconds(body.keep_alive, state.config.keep_alive_s)
    if not inputs:
        state.store.keep_loaded(card, keep_alive, time.time())
        await send_body(req.send, 200, JSON, ollama_chunks.encode({"model": body.model, "embeddings": []}))
        return
    if body.truncate is False and any(content.count_tokens(text) > card.context_length for text in inputs):
        raise ApiError(400, "the input length exceeds the context length")
    size = card.embedding_length
    if body.dimensions and 0 < body.dimensions < size:
        size = body.dimensions
    gen = Generation(state, card, keep_alive, stream=False)

    async def reply() -> None:
        await gen.pace.first_byte()
        vectors = [content.embedding(text, size) for text in inputs]
        metrics = gen.pace.metrics(sum(content.count_tokens(text) for text in inputs), 0)
        answer = {
            "model": body.model,
            "embeddings": vectors,
            "total_duration": metrics.total_duration,
            "load_duration": metrics.load_duration,
            "prompt_eval_count": metrics.prompt_eval_count,
        }
        await send_body(req.send, 200, JSON, ollama_chunks.encode(answer))

    with gen:
        await guarded(req, state, gen.pace, reply())


async def embeddings(req: Request, state: SimState) -> None:
    body = decode(req.body, EmbeddingsRequest)
    card = _scheduled_model(state, body.model)
    keep_alive = keep_alive_seconds(body.keep_alive, state.config.keep_alive_s)
    if not body.prompt:
        state.store.keep_loaded(card, keep_alive, time.time())
        await send_body(req.send, 200, JSON, b'{"embedding":[]}')
        return
    gen = Generation(state, card, keep_alive, stream=False)

    async def reply() -> None:
        await gen.pace.first_byte()
        vector = content.legacy_embedding(body.prompt, card.embedding_length)
        await send_body(req.send, 200, JSON, ollama_chunks.encode({"embedding": vector}))

    with gen:
        await guarded(req, state, gen.pace, reply())
