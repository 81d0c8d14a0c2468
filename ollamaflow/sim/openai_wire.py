"""OpenAI request bodies (chat, completions, embeddings): only the fields the simulator acts on."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from ollamaflow.sim.asgi import ApiError
from ollamaflow.sim.wire_tools import ToolSpec

__all__ = [
    "ChatCompletionRequest",
    "ChatMessage",
    "CompletionRequest",
    "EmbeddingRequest",
    "decode",
    "message_text",
]

T = TypeVar("T")


class ImageURL(msgspec.Struct, kw_only=True):
    url: str = ""
    detail: str | None = None


class ContentPart(msgspec.Struct, kw_only=True):
    type: str = ""
    text: str | None = None
    image_url: ImageURL | str | None = None
    input_audio: Any = None


class FunctionCall(msgspec.Struct, kw_only=True):
    name: str = ""
    arguments: str = ""


class ToolCall(msgspec.Struct, kw_only=True):
    id: str = ""
    type: str = "function"
    function: FunctionCall | None = None


class ChatMessage(msgspec.Struct, kw_only=True):
    role: str = ""
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class StreamOptions(msgspec.Struct, kw_only=True):
    include_usage: bool = False


class NamedFunction(msgspec.Struct, kw_only=True):
    name: str = ""


class ToolChoice(msgspec.Struct, kw_only=True):
    type: str = "function"
    function: NamedFunction | None = None


class JsonSchema(msgspec.Struct, kw_only=True):
    name: str = ""
    schema: Any = None
    strict: bool | None = None


class ResponseFormat(msgspec.Struct, kw_only=True):
    type: str = "text"
    json_schema: JsonSchema | None = None


class ChatCompletionRequest(msgspec.Struct, kw_only=True):
    model: str = ""
    messages: list[ChatMessage] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stop: str | list[str] | None = None
    tools: list[ToolSpec] | None = None
    tool_choice: str | ToolChoice | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: str | None = None
    n: int | None = None


class CompletionRequest(msgspec.Struct, kw_only=True):
    model: str = ""
    prompt: str | list[Any] | None = None
    suffix: str | None = None
    max_tokens: int | None = None
    stop: str | list[str] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    echo: bool = False


class EmbeddingRequest(msgspec.Struct, kw_only=True):
    model: str = ""
    input: str | list[Any] | None = None
    encoding_format: str | None = None
    dimensions: int | None = None


def decode(body: bytes, kind: type[T]) -> T:
    if not body.strip():
        raise ApiError(400, "missing request body")
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.DecodeError as exc:
        raise ApiError(400, str(exc)) from None


def message_text(message: ChatMessage) -> str:
    """The text of a message: its string content, or its text parts joined."""
    if isinstance(message.content, str):
        return message.content
    if not message.content:
        return ""
    return "\n".join(part.text or "" for part in message.content if part.type == "text")
