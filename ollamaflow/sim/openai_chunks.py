"""OpenAI reply bodies: SSE events of chat/completion streams and whole replies. Pure.

A stream's envelope (id, created, model) is encoded once; each chunk only encodes its delta.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec

from ollamaflow.sim import content
from ollamaflow.sim.dialect import Dialect
from ollamaflow.sim.plan import Plan, PlannedCall

__all__ = [
    "DONE",
    "ChatChunks",
    "CompletionChunks",
    "chat_whole",
    "completion_whole",
    "event",
    "total_usage",
    "usage",
]

_encode = msgspec.json.Encoder().encode

DONE = b"data: [DONE]\n\n"


def event(obj: Any) -> bytes:
    return b"data: " + _encode(obj) + b"\n\n"


def usage(plan: Plan) -> dict[str, int]:
    return {
        "prompt_tokens": plan.prompt_tokens,
        "completion_tokens": plan.eval_count,
        "total_tokens": plan.prompt_tokens + plan.eval_count,
    }


def finish_reason(plan: Plan) -> str:
    return "tool_calls" if plan.tool_calls else plan.done_reason


def _envelope(obj_type: str, id_: str, created: int, model: str, dialect: Dialect) -> bytes:
    head = (
        b'{"id":'
        + _encode(id_)
        + b',"object":"'
        + obj_type.encode()
        + b'","created":%d' % created
        + b',"model":'
        + _encode(model)
    )
    if dialect.system_fingerprint:
        head += b',"system_fingerprint":' + _encode(dialect.system_fingerprint)
    return head


def _tool_call(index: int, call: PlannedCall, arguments: str) -> dict[str, Any]:
    return {
        "index": index,
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": arguments},
    }


class ChatChunks:
    """The events of one streamed chat completion."""

    def __init__(self, id_: str, created: int, model: str, dialect: Dialect, *, include_usage: bool) -> None:
        self._dialect = dialect
        self._head = b"data: " + _envelope("chat.completion.chunk", id_, created, model, dialect)
        self._choice = self._head + b',"choices":[{"index":0,"delta":'
        self._tail = b',"logprobs":null,"finish_reason":null}]'
        self._tail += (
            b',"usage":null}' if include_usage and dialect.usage_null_on_chunks else b"}"
        ) + b"\n\n"
        self._include_usage = include_usage

    def delta(self, delta: dict[str, Any]) -> bytes:
        return self._choice + _encode(delta) + self._tail

    def chunks(self, plan: Plan) -> Iterator[bytes]:
        """Role first, then reasoning, content and tool calls: one event per token-sized piece."""
        yield self.delta({"role": "assistant", "content": ""})
        for text in plan.thinking:
            yield self.delta({"reasoning": text})
        for text in plan.content:
            yield self.delta({"content": text})
        for index, call in enumerate(plan.tool_calls):
            if self._dialect.whole_tool_calls:
                yield self.delta({"tool_calls": [_tool_call(index, call, call.arguments_json)]})
                continue
            yield self.delta({"tool_calls": [_tool_call(index, call, "")]})
            for piece in content.split_pieces(call.arguments_json, 8):
                yield self.delta({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})

    @staticmethod
    def count(plan: Plan, dialect: Dialect) -> int:
        calls = sum(
            1 if dialect.whole_tool_calls else 1 + len(content.split_pieces(call.arguments_json, 8))
            for call in plan.tool_calls
        )
        return 1 + len(plan.thinking) + len(plan.content) + calls

    def finish(self, plan: Plan) -> bytes:
        tail = self._tail.replace(b'"finish_reason":null', b'"finish_reason":' + _encode(finish_reason(plan)))
        events = self._choice + b"{}" + tail
        if self._include_usage:
            events += self._head + b',"choices":[],"usage":' + _encode(usage(plan)) + b"}\n\n"
        return events + DONE


class CompletionChunks:
    """The events of one streamed legacy completion; finish_reason rides on the last text chunk."""

    def __init__(self, id_: str, created: int, model: str, dialect: Dialect, *, include_usage: bool) -> None:
        self._head = b"data: " + _envelope("text_completion", id_, created, model, dialect)
        self._usage_null = include_usage and dialect.usage_null_on_chunks
        self._include_usage = include_usage

    def _event(self, index: int, text: str, reason: str | None) -> bytes:
        choice = {"text": text, "index": index, "logprobs": None, "finish_reason": reason}
        body = self._head + b',"choices":[' + _encode(choice) + b"]"
        return body + (b',"usage":null}' if self._usage_null else b"}") + b"\n\n"

    def chunks(self, plans: list[tuple[str, Plan]]) -> Iterator[bytes]:
        """Each prompt's choice in turn; an echoed prompt comes first in its own chunk."""
        for index, (prefix, plan) in enumerate(plans):
            pieces = ([prefix] if prefix else []) + list(plan.content or ("",))
            for i, text in enumerate(pieces):
                yield self._event(index, text, plan.done_reason if i == len(pieces) - 1 else None)

    @staticmethod
    def count(plans: list[tuple[str, Plan]]) -> int:
        return sum((1 if prefix else 0) + max(1, len(plan.content)) for prefix, plan in plans)

    def finish(self, plans: list[tuple[str, Plan]]) -> bytes:
        if not self._include_usage:
            return DONE
        return self._head + b',"choices":[],"usage":' + _encode(total_usage(plans)) + b"}\n\n" + DONE


def total_usage(plans: list[tuple[str, Plan]]) -> dict[str, int]:
    prompt = sum(plan.prompt_tokens for _, plan in plans)
    completion = sum(plan.eval_count for _, plan in plans)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def chat_whole(id_: str, created: int, model: str, dialect: Dialect, plan: Plan) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": "".join(plan.content)}
    if plan.tool_calls:
        if not plan.content:
            message["content"] = dialect.tool_call_content
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments_json},
            }
            for call in plan.tool_calls
        ]
    if plan.thinking:
        message["reasoning"] = "".join(plan.thinking)
    reply: dict[str, Any] = {"id": id_, "object": "chat.completion", "created": created, "model": model}
    if dialect.system_fingerprint:
        reply["system_fingerprint"] = dialect.system_fingerprint
    reply["choices"] = [
        {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason(plan)}
    ]
    reply["usage"] = usage(plan)
    return reply


def completion_whole(
    id_: str, created: int, model: str, dialect: Dialect, plans: list[tuple[str, Plan]]
) -> dict[str, Any]:
    """One choice per prompt; each entry is (text to prepend, e.g. the echoed prompt, plan)."""
    reply: dict[str, Any] = {"id": id_, "object": "text_completion", "created": created, "model": model}
    if dialect.system_fingerprint:
        reply["system_fingerprint"] = dialect.system_fingerprint
    reply["choices"] = [
        {
            "text": prefix + "".join(plan.content),
            "index": i,
            "logprobs": None,
            "finish_reason": plan.done_reason,
        }
        for i, (prefix, plan) in enumerate(plans)
    ]
    reply["usage"] = total_usage(plans)
    return reply
