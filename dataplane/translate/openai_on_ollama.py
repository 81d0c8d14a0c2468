"""OpenAI clients on Ollama backends' native API: their requests, whole replies and streams.

Requests follow how Ollama's own ``/v1`` layer maps (OpenAI defaults temperature 1 and top_p 1,
``stream`` sent explicitly) with the gaps closed: ``max_completion_tokens`` counts, ``developer`` is
``system``, ``n > 1``, ``logit_bias``, remote image URLs and other untranslatable fields are a clear
400. ``tool_choice`` is best effort: ``none`` drops the tools, other values cannot be enforced.
Ollama's own ``options`` (``num_ctx``, ``top_k``, ...) and ``keep_alive`` are honoured when an OpenAI
client adds them to the body (``extra_body``); the OpenAI fields win over them.

Replies: ``openai_reply`` turns one native ``stream: false`` object into ``chat.completion`` or
``text_completion``; ``OpenAIStream`` turns NDJSON lines into SSE chunks: a role chunk first, content
and tool-call deltas (each call whole, with its own ``index``), a finish chunk, the usage chunk when
the client asked for it, then ``[DONE]``. A native ``{"error"}`` line or a cut stream becomes an SSE
error event and no ``[DONE]``.

Which endpoint gets what is tabled in docs/conformance.md.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import msgspec

from dataplane.translate.common import BackendCall, IdSource, decode_request
from dataplane.translate.errors import STREAM_ENDED, Untranslatable, error_message, openai_stream_error
from dataplane.translate.framing import SSE_DONE, NdjsonDecoder, encode_json, sse_event
from shared.errors import UpstreamProtocolError

__all__ = [
    "OpenAIStream",
    "chat_request",
    "completion_request",
    "embeddings_request",
    "openai_reply",
]

# Requests


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


# Replies, whole and streamed


class NativeFunction(msgspec.Struct, kw_only=True):
    name: str = ""
    arguments: dict[str, Any] | str | None = None  # an object from Ollama; a string from lookalikes


class NativeToolCall(msgspec.Struct, kw_only=True):
    function: NativeFunction
    id: str | None = None


class NativeMessage(msgspec.Struct, kw_only=True):
    content: str | None = None
    thinking: str | None = None
    tool_calls: list[NativeToolCall] | None = None


class Native(msgspec.Struct, kw_only=True):
    """One native line or whole reply, chat (``message``) or generate (``response``)."""

    message: NativeMessage | None = None
    response: str | None = None
    thinking: str | None = None
    tool_calls: list[NativeToolCall] | None = None
    done: bool = False
    done_reason: str | None = None
    prompt_eval_count: int = 0
    eval_count: int = 0
    logprobs: list[Any] | None = None
    error: Any = None

    @property
    def text(self) -> str:
        return (self.message.content if self.message else self.response) or ""

    @property
    def reasoning(self) -> str | None:
        return self.message.thinking if self.message else self.thinking

    @property
    def calls(self) -> list[NativeToolCall]:
        return (self.message.tool_calls if self.message else self.tool_calls) or []


def _usage(native: Native) -> dict[str, int]:
    return {
        "prompt_tokens": native.prompt_eval_count,
        "completion_tokens": native.eval_count,
        "total_tokens": native.prompt_eval_count + native.eval_count,
    }


def _finish_reason(native: Native, called_tools: bool) -> str:
    if native.done_reason == "length":
        return "length"
    return "tool_calls" if called_tools else "stop"


def _arguments_text(arguments: dict[str, Any] | str | None) -> str:
    return arguments if isinstance(arguments, str) else encode_json(arguments or {}).decode()


def _openai_call(call: NativeToolCall, index: int | None, ids: IdSource) -> dict[str, Any]:
    out: dict[str, Any] = {} if index is None else {"index": index}
    out.update(
        {
            "id": call.id or ids("call_"),
            "type": "function",
            "function": {
                "name": call.function.name,
                "arguments": _arguments_text(call.function.arguments),
            },
        }
    )
    return out


def _decode(line: bytes | str) -> Native:
    return msgspec.json.decode(line, type=Native)


def openai_reply(body: bytes, *, model: str, chat: bool, id: str, created: int, ids: IdSource) -> bytes:
    """A native ``stream: false`` reply as ``chat.completion`` (``chat``) or ``text_completion``."""
    try:
        native = _decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise UpstreamProtocolError(f"backend sent an unreadable reply: {exc}") from None
    if native.error:
        raise UpstreamProtocolError(error_message(200, body))
    choice: dict[str, Any] = {"index": 0}
    if chat:
        calls = [_openai_call(call, None, ids) for call in native.calls]
        message: dict[str, Any] = {"role": "assistant", "content": native.text or (None if calls else "")}
        if native.reasoning:
            message["reasoning"] = native.reasoning
        if calls:
            message["tool_calls"] = calls
        choice["message"] = message
        choice["logprobs"] = {"content": native.logprobs} if native.logprobs is not None else None
    else:
        calls = []
        choice["text"] = native.text
        choice["logprobs"] = None
    choice["finish_reason"] = _finish_reason(native, bool(calls))
    return encode_json(
        {
            "id": id,
            "object": "chat.completion" if chat else "text_completion",
            "created": created,
            "model": model,
            "choices": [choice],
            "usage": _usage(native),
        }
    )


class OpenAIStream:
    """NDJSON from ``/api/chat`` or ``/api/generate`` -> SSE chunks for the OpenAI client.

    ``feed(chunk, now_ns)`` and ``close(now_ns)`` return the SSE bytes to send (the time is unused:
    native lines carry their own metrics; it is there so every stream translator takes the same calls).
    ``id`` and ``created`` are the same on every chunk, as OpenAI clients expect.
    """

    def __init__(
        self, *, model: str, chat: bool, id: str, created: int, include_usage: bool, ids: IdSource
    ) -> None:
        self._chat = chat
        self._head = {
            "id": id,
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": created,
            "model": model,
        }
        self._include_usage = include_usage
        self._ids = ids
        # A text chunk is nearly every chunk: its bytes around the text are the same each time, so
        # they are encoded once (what ``_chunk(_choice(...))`` would give, key for key).
        head = encode_json(self._head)[:-1]
        usage = b',"usage":null' if include_usage else b""
        key = b'"delta":{"content":' if chat else b'"text":'
        close = b"}" if chat else b""
        self._text_before = b"data: " + head + b',"choices":[{"index":0,' + key
        self._text_after = close + b',"logprobs":null,"finish_reason":null}]' + usage + b"}\n\n"
        self._lines = NdjsonDecoder()
        self._started = False
        self._tool_count = 0
        self._ended = False

    @property
    def ended(self) -> bool:
        """True once ``[DONE]`` or an error event has been returned."""
        return self._ended

    def feed(self, chunk: bytes, now_ns: int) -> list[bytes]:
        return self._handle(self._lines.feed(chunk))

    def close(self, now_ns: int) -> list[bytes]:
        """The body ended: anything short of the native ``done`` line is a broken stream."""
        # A cut-off last line reads as a cut stream, not as a bad line.
        events = self._handle(self._lines.close(), unreadable=STREAM_ENDED)
        if not self._ended:
            self._ended = True
            events.append(openai_stream_error(STREAM_ENDED))
        return events

    def _handle(
        self, lines: list[bytes], unreadable: str = "backend sent an unreadable stream line"
    ) -> list[bytes]:
        events: list[bytes] = []
        for line in lines:
            if self._ended:
                break
            try:
                native = _decode(line)
            except (msgspec.DecodeError, msgspec.ValidationError):
                return events + self._fail(unreadable)
            events += self._native(native, line)
        return events

    def _fail(self, message: str) -> list[bytes]:
        self._ended = True
        return [openai_stream_error(message)]

    def _chunk(self, choice: dict[str, Any] | None, usage: dict[str, int] | None = None) -> bytes:
        chunk = dict(self._head)
        chunk["choices"] = [] if choice is None else [choice]
        if usage is not None or self._include_usage:
            chunk["usage"] = usage
        return sse_event(chunk)

    def _text_chunk(self, text: str) -> bytes:
        return self._text_before + encode_json(text) + self._text_after

    def _choice(
        self, delta: dict[str, Any] | str, finish_reason: str | None = None, logprobs: list[Any] | None = None
    ) -> dict[str, Any]:
        if self._chat:
            content = {"content": logprobs} if logprobs is not None else None
            return {"index": 0, "delta": delta, "logprobs": content, "finish_reason": finish_reason}
        return {"index": 0, "text": delta, "logprobs": None, "finish_reason": finish_reason}

    def _native(self, native: Native, line: bytes) -> list[bytes]:
        if native.error:
            return self._fail(error_message(500, line))
        events: list[bytes] = []
        if not self._started and self._chat:
            events.append(self._chunk(self._choice({"role": "assistant", "content": ""})))
        self._started = True
        if self._chat:
            events += self._chat_deltas(native)
        elif native.text and not native.done:
            events.append(self._text_chunk(native.text))
        if native.done:
            events += self._finish(native)
        return events

    def _chat_deltas(self, native: Native) -> list[bytes]:
        events: list[bytes] = []
        if native.reasoning:
            events.append(self._chunk(self._choice({"reasoning": native.reasoning})))
        if native.text:
            if native.logprobs is None:
                events.append(self._text_chunk(native.text))
            else:
                events.append(self._chunk(self._choice({"content": native.text}, logprobs=native.logprobs)))
        if native.calls:
            first = self._tool_count
            calls = [_openai_call(call, first + n, self._ids) for n, call in enumerate(native.calls)]
            self._tool_count += len(calls)
            events.append(self._chunk(self._choice({"tool_calls": calls})))
        return events

    def _finish(self, native: Native) -> list[bytes]:
        self._ended = True
        reason = _finish_reason(native, self._tool_count > 0)
        last = {} if self._chat else native.text
        events = [self._chunk(self._choice(last, reason))]
        if self._include_usage:
            events.append(self._chunk(None, _usage(native)))
        events.append(SSE_DONE)
        return events
