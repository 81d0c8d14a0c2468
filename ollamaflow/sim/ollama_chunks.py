"""Ollama reply bodies: NDJSON stream lines and whole replies of /api/chat and /api/generate. Pure.

Field order and omissions follow Ollama's Go structs: ``content``/``response`` are always present,
``thinking``/``tool_calls``/metrics only when set, durations are integer nanoseconds.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ollamaflow.sim.plan import Plan, PlannedCall
from ollamaflow.sim.timing import Metrics

__all__ = [
    "PieceLines",
    "chat_final",
    "chat_tool_calls",
    "chat_whole",
    "encode",
    "generate_final",
    "generate_whole",
    "line",
    "load_reply",
    "tool_calls_json",
]

_msgspec_encode = msgspec.json.Encoder().encode

# Go's encoding/json escapes these (HTML safety, and JavaScript line separators), so Ollama never
# sends them raw; raw U+2028/U+2029 would also split a line for httpx's iter_lines.
_GO_ESCAPES = (
    (b"<", b"\\u003c"),
    (b">", b"\\u003e"),
    (b"&", b"\\u0026"),
    (b"\xe2\x80\xa8", b"\\u2028"),
    (b"\xe2\x80\xa9", b"\\u2029"),
)


def _encode(obj: Any) -> bytes:
    data = _msgspec_encode(obj)
    for raw, escaped in _GO_ESCAPES:
        if raw in data:
            data = data.replace(raw, escaped)
    return data


def encode(obj: Any) -> bytes:
    """A whole JSON reply body."""
    return _encode(obj)


def line(obj: Any) -> bytes:
    """One NDJSON line: compact JSON and a single newline."""
    return _encode(obj) + b"\n"


class PieceLines:
    """The ``done:false`` text lines of one chat or generate stream; the model name is encoded once."""

    __slots__ = ("_close", "_open", "_text", "_thinking")

    def __init__(self, model: str, *, chat: bool) -> None:
        self._open = b'{"model":' + _encode(model) + b',"created_at":"'
        if chat:
            self._text = b'","message":{"role":"assistant","content":'
            self._thinking = b'","message":{"role":"assistant","content":"","thinking":'
            self._close = b'},"done":false}\n'
        else:
            self._text = b'","response":'
            self._thinking = b'","response":"","thinking":'
            self._close = b',"done":false}\n'

    def piece(self, created_at: str, text: str, *, thinking: bool = False) -> bytes:
        field = self._thinking if thinking else self._text
        return self._open + created_at.encode() + field + _encode(text) + self._close


def tool_calls_json(calls: tuple[PlannedCall, ...]) -> list[dict[str, Any]]:
    """Ollama's tool calls: ``arguments`` is an object and ``index`` is always there."""
    return [
        {"id": call.id, "function": {"index": index, "name": call.name, "arguments": call.arguments}}
        for index, call in enumerate(calls)
    ]


def chat_tool_calls(model: str, created_at: str, calls: tuple[PlannedCall, ...]) -> bytes:
    """Tool calls stream whole, in one ``done:false`` line with empty content."""
    message = {"role": "assistant", "content": "", "tool_calls": tool_calls_json(calls)}
    return line({"model": model, "created_at": created_at, "message": message, "done": False})


def chat_final(model: str, created_at: str, done_reason: str, metrics: Metrics) -> dict[str, Any]:
    return {
        "model": model,
        "created_at": created_at,
        "message": {"role": "assistant", "content": ""},
        "done": True,
        "done_reason": done_reason,
        **metrics.fields(),
    }


def chat_whole(model: str, created_at: str, plan: Plan, metrics: Metrics) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": "".join(plan.content)}
    if plan.thinking:
        message["thinking"] = "".join(plan.thinking)
    if plan.tool_calls:
        message["tool_calls"] = tool_calls_json(plan.tool_calls)
    reply = chat_final(model, created_at, plan.done_reason, metrics)
    reply["message"] = message
    return reply


def generate_final(
    model: str,
    created_at: str,
    done_reason: str,
    metrics: Metrics,
    context: list[int] | None,
    *,
    response: str = "",
    thinking: str = "",
) -> dict[str, Any]:
    reply: dict[str, Any] = {"model": model, "created_at": created_at, "response": response}
    if thinking:
        reply["thinking"] = thinking
    reply["done"] = True
    reply["done_reason"] = done_reason
    if context is not None:
        reply["context"] = context
    reply.update(metrics.fields())
    return reply


def generate_whole(
    model: str, created_at: str, plan: Plan, metrics: Metrics, context: list[int] | None
) -> dict[str, Any]:
    return generate_final(
        model,
        created_at,
        plan.done_reason,
        metrics,
        context,
        response="".join(plan.content),
        thinking="".join(plan.thinking),
    )


def load_reply(model: str, created_at: str, reason: str, *, chat: bool) -> dict[str, Any]:
    """Empty prompt/messages: Ollama loads (or with keep_alive 0 unloads) and answers at once."""
    reply: dict[str, Any] = {"model": model, "created_at": created_at}
    if chat:
        reply["message"] = {"role": "assistant", "content": ""}
    else:
        reply["response"] = ""
    reply.update({"done": True, "done_reason": reason})
    return reply
