"""OpenAI clients' requests rewritten for Ollama backends' native API (api-formats §3, §5).

Follows how Ollama's own ``/v1`` layer maps (OpenAI defaults temperature 1 and top_p 1, ``stream``
sent explicitly) with the gaps closed: ``max_completion_tokens`` counts, ``developer`` is ``system``,
``n > 1``, ``logit_bias``, remote image URLs and other untranslatable fields are a clear 400.
``tool_choice`` is best effort: ``none`` drops the tools, other values cannot be enforced.
Ollama's own ``options`` (``num_ctx``, ``top_k``, ...) and ``keep_alive`` are honoured when an OpenAI
client adds them to the body (``extra_body``); the OpenAI fields win over them.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import msgspec

from dataplane.translate.common import BackendCall, decode_request
from dataplane.translate.errors import Untranslatable
from dataplane.translate.framing import encode_json

__all__ = ["chat_request", "completion_request", "embeddings_request"]


class ImageUrl(msgspec.Struct, kw_only=True):
    url: str


class Part(msgspec.Struct, kw_only=True):
    type: str
    text: str | None = None
    image_url: ImageUrl | str | None = None


class Function(msgspec.Struct, kw_only=True):
    name: str
    arguments: str | None = None


class ToolCall(msgspec.Struct, kw_only=True):
    function: Function
    id: str | None = None


class Message(msgspec.Struct, kw_only=True):
    role: str
    content: str | list[Part] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    reasoning: str | None = None
    reasoning_content: str | None = None


class StreamOptions(msgspec.Struct, kw_only=True):
    include_usage: bool | None = None


class JsonSchema(msgspec.Struct, kw_only=True):
    schema: dict[str, Any] | None = None


class ResponseFormat(msgspec.Struct, kw_only=True):
    type: str
    json_schema: JsonSchema | None = None


class Reasoning(msgspec.Struct, kw_only=True):
    effort: str | None = None


class Sampling(msgspec.Struct, kw_only=True):
    """What chat and text completions share."""

    model: str = ""
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, Any] | None = None
    # Not OpenAI's: Ollama extensions an OpenAI client may add (extra_body) to reach native knobs.
    options: dict[str, Any] | None = None
    keep_alive: float | str | None = None


class ChatRequest(Sampling, kw_only=True):
    messages: list[Message] | None = None
    max_completion_tokens: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    response_format: ResponseFormat | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    reasoning_effort: str | None = None
    reasoning: Reasoning | None = None


class CompletionRequest(Sampling, kw_only=True):
    prompt: Any = None
    suffix: str | None = None
    echo: bool | None = None
    best_of: int | None = None
    logprobs: int | None = None


class EmbeddingsRequest(msgspec.Struct, kw_only=True):
    model: str = ""
    input: Any = None
    dimensions: int | None = None
    encoding_format: str | None = None


_THINK = {
    "none": False,
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "max": "max",
    "xhigh": "max",
    "ultra": "max",
}
_PENALTIES = ("seed", "frequency_penalty", "presence_penalty")


def _model(name: str) -> str:
    if not name:
        raise Untranslatable("you must provide a model parameter", param="model")
    return name


def _options(request: Sampling, max_tokens: int | None) -> dict[str, Any]:
    if request.n is not None and request.n > 1:
        raise Untranslatable("n > 1 is not supported by this backend; send one request per choice", param="n")
    if request.logit_bias:
        raise Untranslatable("logit_bias is not supported by this backend", param="logit_bias")
    # OpenAI's defaults (as Ollama's /v1 applies them), then native options, then the OpenAI fields.
    options: dict[str, Any] = {"temperature": 1.0, "top_p": 1.0, **(request.options or {})}
    for key in ("temperature", "top_p"):
        if (value := getattr(request, key)) is not None:
            options[key] = value
    for key in _PENALTIES:
        if (value := getattr(request, key)) is not None:
            options[key] = value
    if request.stop:
        options["stop"] = [request.stop] if isinstance(request.stop, str) else request.stop
    if max_tokens is not None:
        options["num_predict"] = max_tokens
    return options


def _format(response_format: ResponseFormat | None) -> str | dict[str, Any] | None:
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return "json"
    if response_format.type == "json_schema":
        if response_format.json_schema is None or response_format.json_schema.schema is None:
            raise Untranslatable(
                "response_format json_schema needs json_schema.schema", param="response_format"
            )
        return response_format.json_schema.schema
    raise Untranslatable(
        f"unsupported response_format type {response_format.type!r}", param="response_format"
    )


def _think(request: ChatRequest) -> bool | str | None:
    effort = request.reasoning_effort or (request.reasoning.effort if request.reasoning else None)
    if effort is None:
        return None
    if effort not in _THINK:
        raise Untranslatable(f"invalid reasoning effort {effort!r}", param="reasoning_effort")
    return _THINK[effort]


def _image(part: Part) -> str:
    url = part.image_url.url if isinstance(part.image_url, ImageUrl) else part.image_url
    if not url:
        raise Untranslatable("image_url part without a url", param="messages")
    if not url.startswith("data:"):
        raise Untranslatable(
            "image URLs are not supported; send the image inline as a data: URI (base64)", param="messages"
        )
    header, comma, data = url.partition(",")
    if not comma or not header.endswith(";base64"):
        raise Untranslatable("image data URIs must be base64 encoded", param="messages")
    try:
        base64.b64decode(data, validate=True)
    except binascii.Error:
        raise Untranslatable("image data URI holds invalid base64", param="messages") from None
    return data


def _content(content: str | list[Part] | None) -> tuple[str, list[str]]:
    if content is None or isinstance(content, str):
        return content or "", []
    texts: list[str] = []
    images: list[str] = []
    for part in content:
        if part.type == "text":
            texts.append(part.text or "")
        elif part.type == "image_url":
            images.append(_image(part))
        else:
            raise Untranslatable(f"content parts of type {part.type!r} are not supported", param="messages")
    return "\n".join(texts), images


def _arguments(call: ToolCall) -> dict[str, Any]:
    try:
        arguments = msgspec.json.decode(call.function.arguments or "{}")
    except msgspec.DecodeError:
        arguments = None
    if not isinstance(arguments, dict):
        raise Untranslatable("invalid tool call arguments: not a JSON object", param="messages")
    return arguments


def _messages(messages: list[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    names_by_id: dict[str, str] = {}
    for message in messages:
        role = "system" if message.role == "developer" else message.role
        text, images = _content(message.content)
        entry: dict[str, Any] = {"role": role, "content": text}
        if images:
            entry["images"] = images
        if thinking := message.reasoning or message.reasoning_content:
            entry["thinking"] = thinking
        if message.tool_calls:
            calls = []
            for call in message.tool_calls:
                function = {"name": call.function.name, "arguments": _arguments(call)}
                calls.append({"id": call.id, "function": function} if call.id else {"function": function})
                if call.id:
                    names_by_id[call.id] = call.function.name
            entry["tool_calls"] = calls
        if role == "tool":
            tool_name = message.name or names_by_id.get(message.tool_call_id or "")
            if tool_name:
                entry["tool_name"] = tool_name
            if message.tool_call_id:
                entry["tool_call_id"] = message.tool_call_id
        out.append(entry)
    return out


def _include_usage(request: Sampling) -> bool:
    return bool(request.stream and request.stream_options and request.stream_options.include_usage)


def chat_request(body: bytes, *, backend_model: str | None = None) -> BackendCall:
    """``/v1/chat/completions`` as ``/api/chat``."""
    request = decode_request(body, ChatRequest)
    model = _model(request.model)
    if not request.messages:
        raise Untranslatable("messages must not be empty", param="messages")
    max_tokens = (
        request.max_completion_tokens if request.max_completion_tokens is not None else request.max_tokens
    )
    out: dict[str, Any] = {
        "model": backend_model or model,
        "messages": _messages(request.messages),
        "stream": bool(request.stream),
        "options": _options(request, max_tokens),
    }
    if request.keep_alive is not None:
        out["keep_alive"] = request.keep_alive
    if request.tools and request.tool_choice != "none":
        out["tools"] = request.tools
    if (response_format := _format(request.response_format)) is not None:
        out["format"] = response_format
    if (think := _think(request)) is not None:
        out["think"] = think
    if request.logprobs:
        out["logprobs"] = True
        if request.top_logprobs:
            out["top_logprobs"] = request.top_logprobs
    return BackendCall(
        path="/api/chat",
        body=encode_json(out),
        stream=bool(request.stream),
        model=model,
        include_usage=_include_usage(request),
    )


def completion_request(body: bytes, *, backend_model: str | None = None) -> BackendCall:
    """``/v1/completions`` (one string prompt) as ``/api/generate``."""
    request = decode_request(body, CompletionRequest)
    model = _model(request.model)
    prompt = request.prompt
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise Untranslatable("prompt must be a single string for this backend", param="prompt")
    if request.echo:
        raise Untranslatable("echo is not supported by this backend", param="echo")
    if request.best_of is not None and request.best_of > 1:
        raise Untranslatable("best_of > 1 is not supported by this backend", param="best_of")
    if request.logprobs:
        raise Untranslatable(
            "logprobs on /v1/completions cannot be translated for this backend", 501, param="logprobs"
        )
    out: dict[str, Any] = {
        "model": backend_model or model,
        "prompt": prompt,
        "stream": bool(request.stream),
        "options": _options(request, request.max_tokens),
    }
    if request.suffix:
        out["suffix"] = request.suffix
    if request.keep_alive is not None:
        out["keep_alive"] = request.keep_alive
    return BackendCall(
        path="/api/generate",
        body=encode_json(out),
        stream=bool(request.stream),
        model=model,
        include_usage=_include_usage(request),
    )


def embeddings_request(body: bytes, *, backend_model: str | None = None) -> BackendCall:
    """``/v1/embeddings`` as ``/api/embed``; ``base64`` on the call says how to encode the reply."""
    request = decode_request(body, EmbeddingsRequest)
    model = _model(request.model)
    encoding = (request.encoding_format or "float").lower()
    if encoding not in ("float", "base64"):
        raise Untranslatable(
            f"Invalid value for 'encoding_format' = {request.encoding_format}. "
            "Supported values: ['float', 'base64'].",
            param="encoding_format",
        )
    texts = request.input
    if isinstance(texts, str):
        texts = [texts]
    if not texts or not isinstance(texts, list):
        raise Untranslatable("invalid input: a string or a non-empty list of strings", param="input")
    if not all(isinstance(text, str) for text in texts):
        raise Untranslatable(
            "token arrays as input are not supported by this backend; send text", param="input"
        )
    out: dict[str, Any] = {"model": backend_model or model, "input": texts}
    if request.dimensions:
        out["dimensions"] = request.dimensions
    return BackendCall(
        path="/api/embed", body=encode_json(out), stream=False, model=model, base64=encoding == "base64"
    )
