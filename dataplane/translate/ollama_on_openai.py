"""Ollama clients on OpenAI-compatible backends: their requests, whole replies and streams.

Requests: ``/api/chat`` and ``/api/generate`` go to ``/v1/chat/completions`` (``raw``/``suffix``
generate to ``/v1/completions``); ``/api/embed`` and ``/api/embeddings`` go to ``/v1/embeddings``.
Ollama streams unless told not to, so a missing ``stream`` means a streamed backend call with usage
included. Empty chat/generate calls are Ollama's load/unload calls and are answered here.

Replies: ``ollama_reply`` turns one ``chat.completion`` / ``text_completion`` into Ollama's single JSON
object; ``OllamaStream`` turns the SSE stream into NDJSON lines, chunk by chunk. Tool-call fragments
are gathered per ``index`` and sent as whole Ollama tool calls (arguments as objects) when the choice
finishes. A stream ends with ``done: true`` only after the backend's finish and ``[DONE]``; an error
event or a cut stream ends with an ``{"error": ...}`` line instead.

Which endpoint gets what is tabled in docs/conformance.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from dataplane.translate.common import BackendCall, IdSource, LocalReply, decode_request, rfc3339
from dataplane.translate.errors import STREAM_ENDED, Untranslatable, error_message, ollama_stream_error
from dataplane.translate.framing import SseDecoder, SseEvent, encode_json, ndjson_line
from shared.errors import UpstreamProtocolError

__all__ = [
    "OllamaStream",
    "chat_request",
    "embed_request",
    "embeddings_request",
    "generate_request",
    "ollama_reply",
]

# Requests


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


# Replies, whole and streamed


class FunctionPart(msgspec.Struct, kw_only=True):
    name: str | None = None
    arguments: str | dict[str, Any] | None = None  # a JSON string; a few servers send the object


class ToolCallPart(msgspec.Struct, kw_only=True):
    index: int | None = None
    id: str | None = None
    function: FunctionPart | None = None


class Delta(msgspec.Struct, kw_only=True):
    content: str | None = None
    reasoning: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallPart] | None = None

    @property
    def thinking(self) -> str | None:
        return self.reasoning or self.reasoning_content


class Choice(msgspec.Struct, kw_only=True):
    index: int = 0
    delta: Delta | None = None
    message: Delta | None = None
    text: str | None = None
    finish_reason: str | None = None
    logprobs: Any = None


class Usage(msgspec.Struct, kw_only=True):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Completion(msgspec.Struct, kw_only=True):
    """A whole reply or one stream chunk, chat or text; only what Ollama's reply needs."""

    choices: list[Choice] | None = None
    usage: Usage | None = None
    error: Any = None
    object: str | None = None  # older vLLM sends flat errors: {"object": "error", "message": ...}

    @property
    def failed(self) -> bool:
        return self.error is not None or self.object == "error"


class ToolArgumentsError(ValueError):
    """Tool-call arguments from the backend that are not a JSON object."""


@dataclass
class _ToolBuilder:
    id: str | None = None
    name: str = ""
    arguments: list[str] = field(default_factory=list)

    def add(self, part: ToolCallPart) -> None:
        self.id = self.id or part.id
        if part.function is not None:
            self.name = self.name or (part.function.name or "")
            arguments = part.function.arguments
            if isinstance(arguments, dict):
                arguments = encode_json(arguments).decode()
            if arguments:
                self.arguments.append(arguments)

    def ollama(self, index: int, ids: IdSource) -> dict[str, Any]:
        text = "".join(self.arguments).strip() or "{}"
        try:
            arguments = msgspec.json.decode(text)
        except msgspec.DecodeError:
            arguments = None
        if not isinstance(arguments, dict):
            raise ToolArgumentsError(f"backend sent arguments for tool {self.name!r} that are not an object")
        function = {"index": index, "name": self.name, "arguments": arguments}
        return {"id": self.id or ids("call_"), "function": function}


def _gather(builders: dict[int, _ToolBuilder], parts: list[ToolCallPart]) -> None:
    for part in parts:
        if part.index is not None:
            key = part.index
        elif part.id is not None or not builders:
            key = len(builders)
        else:
            key = max(builders)
        builders.setdefault(key, _ToolBuilder()).add(part)


def _whole_calls(builders: dict[int, _ToolBuilder], ids: IdSource) -> list[dict[str, Any]]:
    # Ollama numbers tool calls 0, 1, 2... whatever indexes the backend used.
    return [builders[key].ollama(number, ids) for number, key in enumerate(sorted(builders))]


def _done_reason(finish_reason: str | None) -> str:
    return "length" if finish_reason == "length" else "stop"


def _logprobs(choice: Choice) -> list[Any] | None:
    content = choice.logprobs.get("content") if isinstance(choice.logprobs, dict) else None
    return content if isinstance(content, list) else None


@dataclass(frozen=True)
class _Shape:
    """Chat lines carry ``message``; generate lines carry ``response``/``thinking`` at the top."""

    model: str
    chat: bool
    # A text line's bytes around its stamp and its text, encoded once.
    _model: bytes = field(init=False, repr=False, compare=False)
    _before: bytes = field(init=False, repr=False, compare=False)
    _after: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        key = b'","message":{"role":"assistant","content":' if self.chat else b'","response":'
        object.__setattr__(self, "_before", key)
        object.__setattr__(self, "_after", b'},"done":false}\n' if self.chat else b',"done":false}\n')
        object.__setattr__(self, "_model", b'{"model":' + encode_json(self.model) + b',"created_at":"')

    def text_line(self, now_ns: int, text: str) -> bytes:
        """``ndjson_line(line(now_ns, text))`` of a line with text only (most of a stream), encoded
        around the text instead of through two dicts."""
        stamp = rfc3339(now_ns).encode()
        return self._model + stamp + self._before + encode_json(text) + self._after

    def line(
        self,
        now_ns: int,
        text: str,
        thinking: str | None = None,
        tool_calls: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model, "created_at": rfc3339(now_ns)}
        body: dict[str, Any] = out
        if self.chat:
            body = out["message"] = {"role": "assistant", "content": text}
        else:
            out["response"] = text
        if thinking:
            body["thinking"] = thinking
        if tool_calls:
            body["tool_calls"] = tool_calls
        out["done"] = False
        return out


def _metrics(line: dict[str, Any], **values: int | None) -> dict[str, Any]:
    # Ollama omits zero metrics (Go omitempty); so do we, and unknown ones too.
    line.update({name: value for name, value in values.items() if value})
    return line


def ollama_reply(
    body: bytes, *, model: str, chat: bool, started_ns: int, now_ns: int, ids: IdSource
) -> bytes:
    """A whole OpenAI reply as Ollama's ``stream: false`` object for /api/chat (``chat``) or /api/generate."""
    try:
        reply = msgspec.json.decode(body, type=Completion)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise UpstreamProtocolError(f"backend sent an unreadable reply: {exc}") from None
    if reply.failed:
        raise UpstreamProtocolError(error_message(200, body))
    if not reply.choices:
        raise UpstreamProtocolError("backend reply had no choices")
    choice = reply.choices[0]
    has_message = choice.message is not None or choice.delta is not None
    message = choice.message or choice.delta or Delta()
    # A whole reply lists whole calls: each entry is its own call, whatever its index says.
    builders = {number: _ToolBuilder() for number in range(len(message.tool_calls or []))}
    for number, part in enumerate(message.tool_calls or []):
        builders[number].add(part)
    try:
        calls = _whole_calls(builders, ids)
    except ToolArgumentsError as exc:
        raise UpstreamProtocolError(str(exc)) from None
    text = message.content if has_message else choice.text
    line = _Shape(model, chat).line(now_ns, text or "", message.thinking, calls)
    if (logprobs := _logprobs(choice)) is not None:
        line["logprobs"] = logprobs
    line["done"] = True
    line["done_reason"] = _done_reason(choice.finish_reason)
    usage = reply.usage or Usage()
    return encode_json(
        _metrics(
            line,
            total_duration=now_ns - started_ns,
            prompt_eval_count=usage.prompt_tokens,
            eval_count=usage.completion_tokens,
        )
    )


class OllamaStream:
    """SSE from ``/v1/chat/completions`` or ``/v1/completions`` -> NDJSON for /api/chat or /api/generate.

    ``feed(chunk, now_ns)`` and ``close(now_ns)`` return the NDJSON lines to send. Durations are taken
    from the times passed in: ``started_ns`` (request start), the first token, and the end.
    """

    def __init__(self, *, model: str, chat: bool, started_ns: int, ids: IdSource) -> None:
        self._shape = _Shape(model, chat)
        self._started_ns = started_ns
        self._ids = ids
        self._sse = SseDecoder()
        self._tools: dict[int, _ToolBuilder] = {}
        self._finish: str | None = None
        self._usage: Usage | None = None
        self._first_ns: int | None = None
        self._ended = False

    @property
    def ended(self) -> bool:
        """True once the last line (done or error) has been returned."""
        return self._ended

    def feed(self, chunk: bytes, now_ns: int) -> list[bytes]:
        lines: list[bytes] = []
        for event in self._sse.feed(chunk):
            if self._ended:
                break
            lines += self._event(event, now_ns)
        return lines

    def close(self, now_ns: int) -> list[bytes]:
        """The body ended: finished properly only if the finish and usage both came."""
        self._sse.close()
        if self._ended:
            return []
        if self._finish is not None and self._usage is not None:
            return self._final(now_ns)
        return self._fail(STREAM_ENDED)

    def _fail(self, message: str) -> list[bytes]:
        self._ended = True
        return [ollama_stream_error(message)]

    def _final(self, now_ns: int) -> list[bytes]:
        self._ended = True
        line = self._shape.line(now_ns, "")
        line["done"] = True
        line["done_reason"] = _done_reason(self._finish)
        usage = self._usage or Usage()
        first = self._first_ns if self._first_ns is not None else now_ns
        return [
            ndjson_line(
                _metrics(
                    line,
                    total_duration=now_ns - self._started_ns,
                    prompt_eval_count=usage.prompt_tokens,
                    prompt_eval_duration=first - self._started_ns,
                    eval_count=usage.completion_tokens,
                    eval_duration=now_ns - first,
                )
            )
        ]

    def _event(self, event: SseEvent, now_ns: int) -> list[bytes]:
        if event.data.startswith("[DONE]"):
            # vLLM sends [DONE] after an error event too; without a finish it is no success.
            return self._final(now_ns) if self._finish is not None else self._fail(STREAM_ENDED)
        try:
            chunk = msgspec.json.decode(event.data, type=Completion)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return self._fail("backend sent an unreadable stream event")
        if chunk.failed or event.event == "error":
            return self._fail(error_message(500, event.data.encode()))
        if chunk.usage is not None:
            self._usage = chunk.usage
        lines: list[bytes] = []
        for choice in chunk.choices or []:
            if choice.index == 0 and not self._ended:
                lines += self._choice(choice, now_ns)
        return lines

    def _choice(self, choice: Choice, now_ns: int) -> list[bytes]:
        lines: list[bytes] = []
        delta = choice.delta or choice.message
        text = delta.content if delta is not None else choice.text
        thinking = delta.thinking if delta is not None else None
        if delta is not None and delta.tool_calls:
            self._first_ns = self._first_ns or now_ns
            _gather(self._tools, delta.tool_calls)
        if text or thinking:
            self._first_ns = self._first_ns or now_ns
            logprobs = _logprobs(choice)
            if thinking or logprobs is not None:
                line = self._shape.line(now_ns, text or "", thinking)
                if logprobs is not None:
                    line["logprobs"] = logprobs
                lines.append(ndjson_line(line))
            else:
                lines.append(self._shape.text_line(now_ns, text or ""))
        if choice.finish_reason is not None and self._finish is None:
            self._finish = choice.finish_reason
            if self._tools:
                try:
                    calls = _whole_calls(self._tools, self._ids)
                except ToolArgumentsError as exc:
                    return lines + self._fail(str(exc))
                lines.append(ndjson_line(self._shape.line(now_ns, "", tool_calls=calls)))
        return lines
