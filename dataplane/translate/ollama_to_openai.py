"""Ollama clients' requests rewritten for OpenAI-compatible backends (api-formats §4).

``/api/chat`` and ``/api/generate`` go to ``/v1/chat/completions`` (``raw``/``suffix`` generate to
``/v1/completions``); ``/api/embed`` and ``/api/embeddings`` go to ``/v1/embeddings``. Ollama streams
unless told not to, so a missing ``stream`` means a streamed backend call with usage included.
Empty chat/generate calls are Ollama's load/unload calls and are answered here.
"""

from __future__ import annotations

from typing import Any

import msgspec

from dataplane.translate.common import BackendCall, LocalReply, decode_request, rfc3339
from dataplane.translate.errors import Untranslatable
from dataplane.translate.framing import encode_json

__all__ = ["chat_request", "embed_request", "embeddings_request", "generate_request"]


class ToolFunction(msgspec.Struct, kw_only=True):
    name: str
    arguments: dict[str, Any] = {}


class ToolCall(msgspec.Struct, kw_only=True):
    function: ToolFunction
    id: str | None = None


class Message(msgspec.Struct, kw_only=True):
    role: str
    content: str | None = None
    thinking: str | None = None
    images: list[str] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None
    tool_call_id: str | None = None


Format = str | dict[str, Any] | None
Think = bool | str | None


class _InferenceRequest(msgspec.Struct, kw_only=True):
    """The fields chat and generate requests share."""

    model: str = ""
    format: Format = None
    options: dict[str, Any] | None = None
    stream: bool | None = None
    keep_alive: float | str | None = None
    think: Think = None
    logprobs: bool | None = None
    top_logprobs: int | None = None


class ChatRequest(_InferenceRequest, kw_only=True):
    messages: list[Message] | None = None
    tools: list[dict[str, Any]] | None = None


class GenerateRequest(_InferenceRequest, kw_only=True):
    prompt: str | None = None
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None
    raw: bool = False
    images: list[str] | None = None


class EmbedRequest(msgspec.Struct, kw_only=True):
    model: str = ""
    input: str | list[str] | None = None
    dimensions: int | None = None


class EmbeddingsRequest(msgspec.Struct, kw_only=True):
    model: str = ""
    prompt: str | None = None


_SAME_NAMED = ("temperature", "top_p", "seed", "frequency_penalty", "presence_penalty")
# Sampling knobs vLLM takes beyond OpenAI's set; only sent when the backend says it is vLLM-like.
_EXTRAS = {"top_k": "top_k", "min_p": "min_p", "repeat_penalty": "repetition_penalty"}
_IMAGE_MAGIC = (
    ("iVBORw0KGgo", "image/png"),
    ("/9j/", "image/jpeg"),
    ("UklGR", "image/webp"),
    ("R0lGOD", "image/gif"),
)


def _model(name: str) -> str:
    if not name:
        raise Untranslatable("model is required")
    return name


def _is_zero_duration(value: float | str | None) -> bool:
    if isinstance(value, int | float):
        return value == 0
    if isinstance(value, str):
        number = value.rstrip("abcdefghijklmnopqrstuvwxyzµ")
        try:
            return float(number) == 0
        except ValueError:
            return False
    return False


def _load_reply(model: str, keep_alive: float | str | None, now_ns: int, *, chat: bool) -> LocalReply:
    reply: dict[str, Any] = {"model": model, "created_at": rfc3339(now_ns)}
    if chat:
        reply["message"] = {"role": "assistant", "content": ""}
    else:
        reply["response"] = ""
    reply["done"] = True
    reply["done_reason"] = "unload" if _is_zero_duration(keep_alive) else "load"
    return LocalReply(encode_json(reply))


def _sampling(options: dict[str, Any] | None, *, extras: bool) -> dict[str, Any]:
    options = options or {}
    out = {key: options[key] for key in _SAME_NAMED if options.get(key) is not None}
    stop = options.get("stop")
    if stop:
        out["stop"] = [stop] if isinstance(stop, str) else stop
    num_predict = options.get("num_predict")
    if isinstance(num_predict, int) and num_predict > 0:
        out["max_tokens"] = num_predict
    if extras:
        out.update(
            {theirs: options[ours] for ours, theirs in _EXTRAS.items() if options.get(ours) is not None}
        )
    return out


def _response_format(value: Format) -> dict[str, Any] | None:
    if value in (None, ""):
        return None
    if value == "json":
        return {"type": "json_object"}
    if isinstance(value, dict):
        return {"type": "json_schema", "json_schema": {"name": "response", "schema": value}}
    raise Untranslatable(f'invalid format {value!r}: use "json" or a JSON schema object', param="format")


def _shared_fields(request: ChatRequest | GenerateRequest, *, extras: bool) -> dict[str, Any]:
    out = _sampling(request.options, extras=extras)
    response_format = _response_format(request.format)
    if response_format is not None:
        out["response_format"] = response_format
    if isinstance(request.think, str) and request.think:
        out["reasoning_effort"] = request.think
    elif isinstance(request.think, bool) and extras:
        out["chat_template_kwargs"] = {"enable_thinking": request.think}
    if request.logprobs:
        out["logprobs"] = True
        if request.top_logprobs:
            out["top_logprobs"] = request.top_logprobs
    if request.stream is not False:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    else:
        out["stream"] = False
    return out


def _image_url(image: str) -> dict[str, Any]:
    if image.startswith("data:"):
        return {"type": "image_url", "image_url": {"url": image}}
    mime = next((kind for magic, kind in _IMAGE_MAGIC if image.startswith(magic)), "image/jpeg")
    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{image}"}}


def _content(text: str | None, images: list[str] | None) -> str | list[dict[str, Any]]:
    if not images:
        return text or ""
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    return parts + [_image_url(image) for image in images]


def _tool_call_id(message: Message, unanswered: list[tuple[str, str]]) -> str:
    """The id a tool result answers: its own, else the earliest open call of its name, else the next."""
    if message.tool_call_id:
        chosen = next((entry for entry in unanswered if entry[0] == message.tool_call_id), None)
        if chosen is not None:
            unanswered.remove(chosen)
        return message.tool_call_id
    chosen = next((entry for entry in unanswered if entry[1] == message.tool_name), None)
    if chosen is None and unanswered:
        chosen = unanswered[0]
    if chosen is None:
        raise Untranslatable(
            "a tool message must follow an assistant message with tool_calls", param="messages"
        )
    unanswered.remove(chosen)
    return chosen[0]


def _messages(messages: list[Message], *, extras: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    unanswered: list[tuple[str, str]] = []
    for turn, message in enumerate(messages):
        role = message.role.lower()
        entry: dict[str, Any] = {"role": role, "content": _content(message.content, message.images)}
        if role == "assistant" and message.tool_calls:
            calls = []
            for number, call in enumerate(message.tool_calls):
                call_id = call.id or f"call_{turn}_{number}"
                arguments = encode_json(call.function.arguments).decode()
                calls.append(
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": call.function.name, "arguments": arguments},
                    }
                )
            unanswered = [(call["id"], call["function"]["name"]) for call in calls]
            entry["tool_calls"] = calls
            entry["content"] = entry["content"] or None
        elif role == "tool":
            entry["tool_call_id"] = _tool_call_id(message, unanswered)
        if role == "assistant" and message.thinking and extras:
            entry["reasoning"] = message.thinking
        out.append(entry)
    return out


def _call(path: str, body: dict[str, Any], model: str) -> BackendCall:
    return BackendCall(path=path, body=encode_json(body), stream=bool(body.get("stream")), model=model)


def chat_request(
    body: bytes, *, now_ns: int, backend_model: str | None = None, extras: bool = False
) -> BackendCall | LocalReply:
    """``/api/chat`` as ``/v1/chat/completions``; ``extras`` adds vLLM-only fields."""
    request = decode_request(body, ChatRequest)
    model = _model(request.model)
    if not request.messages:
        return _load_reply(model, request.keep_alive, now_ns, chat=True)
    out: dict[str, Any] = {
        "model": backend_model or model,
        "messages": _messages(request.messages, extras=extras),
    }
    if request.tools:
        out["tools"] = request.tools
    out.update(_shared_fields(request, extras=extras))
    return _call("/v1/chat/completions", out, model)


def generate_request(
    body: bytes, *, now_ns: int, backend_model: str | None = None, extras: bool = False
) -> BackendCall | LocalReply:
    """``/api/generate``: ``/v1/completions`` for raw prompts and suffixes, else ``/v1/chat/completions``."""
    request = decode_request(body, GenerateRequest)
    model = _model(request.model)
    if request.template:
        raise Untranslatable("template is not supported by OpenAI-compatible backends", param="template")
    if request.context:
        raise Untranslatable(
            "context is not supported by OpenAI-compatible backends; use /api/chat", param="context"
        )
    if not request.prompt and not request.images:
        return _load_reply(model, request.keep_alive, now_ns, chat=False)
    out: dict[str, Any] = {"model": backend_model or model}
    if request.raw or request.suffix:
        if request.images:
            raise Untranslatable("images need a chat template; they cannot go with raw or suffix")
        if request.logprobs:
            # /v1/completions reports logprobs in another shape than Ollama's; not mapped.
            raise Untranslatable("logprobs with raw or suffix cannot be translated for this backend", 501)
        out["prompt"] = request.prompt or ""
        if request.suffix:
            out["suffix"] = request.suffix
        fields = _shared_fields(request, extras=extras)
        if "response_format" in fields and not extras:
            raise Untranslatable(
                "format cannot be combined with raw or suffix on this backend", param="format"
            )
        fields.pop("reasoning_effort", None)
        fields.pop("chat_template_kwargs", None)
        out.update(fields)
        return _call("/v1/completions", out, model)
    messages: list[dict[str, Any]] = [{"role": "system", "content": request.system}] if request.system else []
    messages.append({"role": "user", "content": _content(request.prompt, request.images)})
    out["messages"] = messages
    out.update(_shared_fields(request, extras=extras))
    return _call("/v1/chat/completions", out, model)


def embed_request(body: bytes, *, backend_model: str | None = None) -> BackendCall | LocalReply:
    """``/api/embed`` as ``/v1/embeddings`` with float vectors; empty input answers ``embeddings: []``."""
    request = decode_request(body, EmbedRequest)
    model = _model(request.model)
    if not request.input:
        return LocalReply(encode_json({"model": model, "embeddings": []}))
    out: dict[str, Any] = {
        "model": backend_model or model,
        "input": request.input,
        "encoding_format": "float",
    }
    if request.dimensions:
        out["dimensions"] = request.dimensions
    return _call("/v1/embeddings", out, model)


def embeddings_request(body: bytes, *, backend_model: str | None = None) -> BackendCall | LocalReply:
    """The legacy ``/api/embeddings`` (one ``prompt``) as ``/v1/embeddings``."""
    request = decode_request(body, EmbeddingsRequest)
    model = _model(request.model)
    if not request.prompt:
        return LocalReply(encode_json({"embedding": []}))
    out = {"model": backend_model or model, "input": [request.prompt], "encoding_format": "float"}
    return _call("/v1/embeddings", out, model)
