"""Ollama backends' chat/generate replies rewritten for OpenAI clients (api-formats §3.1-3.2).

``openai_reply`` turns one native ``stream: false`` object into ``chat.completion`` or
``text_completion``; ``OpenAIStream`` turns NDJSON lines into SSE chunks: a role chunk first, content
and tool-call deltas (each call whole, with its own ``index``), a finish chunk, the usage chunk when
the client asked for it, then ``[DONE]``. A native ``{"error"}`` line or a cut stream becomes an SSE
error event and no ``[DONE]``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from dataplane.translate.common import IdSource
from dataplane.translate.errors import STREAM_ENDED, error_message, openai_stream_error
from dataplane.translate.framing import SSE_DONE, NdjsonDecoder, encode_json, sse_event
from shared.errors import UpstreamProtocolError

__all__ = ["OpenAIStream", "openai_reply"]


class Function(msgspec.Struct, kw_only=True):
    name: str = ""
    arguments: dict[str, Any] | str | None = None  # an object from Ollama; a string from lookalikes


class ToolCall(msgspec.Struct, kw_only=True):
    function: Function
    id: str | None = None


class Message(msgspec.Struct, kw_only=True):
    content: str | None = None
    thinking: str | None = None
    tool_calls: list[ToolCall] | None = None


class Native(msgspec.Struct, kw_only=True):
    """One native line or whole reply, chat (``message``) or generate (``response``)."""

    message: Message | None = None
    response: str | None = None
    thinking: str | None = None
    tool_calls: list[ToolCall] | None = None
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
    def calls(self) -> list[ToolCall]:
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


def _openai_call(call: ToolCall, index: int | None, ids: IdSource) -> dict[str, Any]:
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

    ``feed(chunk)`` and ``close()`` return the SSE bytes to send. ``id`` and ``created`` are the
    same on every chunk, as OpenAI clients expect.
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

    def feed(self, chunk: bytes) -> list[bytes]:
        return self._handle(self._lines.feed(chunk))

    def close(self) -> list[bytes]:
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
