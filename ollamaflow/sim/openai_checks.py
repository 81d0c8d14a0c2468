"""Validation of OpenAI request fields, with the messages each dialect answers bad input with."""

from __future__ import annotations

from typing import Any

import msgspec

from ollamaflow.sim.asgi import ApiError
from ollamaflow.sim.dialect import Dialect
from ollamaflow.sim.openai_wire import ChatMessage, ResponseFormat, ToolChoice

__all__ = [
    "check_messages",
    "completion_prompts",
    "embedding_inputs",
    "encoding_format",
    "json_format",
    "thinks",
    "token_limit",
    "tool_choice",
]

_INVALID_INPUT = (
    "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference."
)
_IMAGE_URLS = "image URLs are not currently supported, please use base64 encoded data instead"
_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")


def check_messages(messages: list[ChatMessage], dialect: Dialect) -> None:
    for message in messages:
        if message.role not in ("system", "developer", "user", "assistant", "tool", "function"):
            raise ApiError(400, f"invalid role: {message.role!r}", param="messages")
        if message.content is None and not message.tool_calls and dialect.ollama:
            raise ApiError(400, "invalid message content type")
        for call in message.tool_calls or ():
            try:
                arguments = msgspec.json.decode(call.function.arguments or "{}") if call.function else {}
            except msgspec.DecodeError:
                arguments = None
            if not isinstance(arguments, dict):
                raise ApiError(400, "invalid tool call arguments", param="messages")
        if isinstance(message.content, list):
            for part in message.content:
                if part.type not in ("text", "image_url", "input_audio"):
                    raise ApiError(400, "invalid message format", param="messages")
                url = (
                    part.image_url if isinstance(part.image_url, str) else getattr(part.image_url, "url", "")
                )
                if part.type == "image_url" and dialect.ollama and not url.startswith("data:"):
                    raise ApiError(400, _IMAGE_URLS)


def token_limit(max_tokens: int | None, max_completion_tokens: int | None, dialect: Dialect) -> int:
    """The answer's token budget (0 = none); Ollama's /v1 ignores max_completion_tokens."""
    limit = max_tokens
    if dialect.honours_max_completion_tokens and max_completion_tokens is not None:
        limit = max_completion_tokens
    if limit is None:
        return 0
    if limit < 1 and not dialect.ollama:
        raise ApiError(400, "max_tokens must be at least 1", param="max_tokens")
    return limit


def tool_choice(choice: str | ToolChoice | None, dialect: Dialect) -> str | None:
    """None/auto/none/required, or the name of the function the model must call."""
    if choice is None or not dialect.honours_tool_choice:
        return None
    if isinstance(choice, ToolChoice):
        if choice.function is None or not choice.function.name:
            raise ApiError(400, "tool_choice.function.name is required", param="tool_choice")
        return choice.function.name
    if choice not in ("none", "auto", "required"):
        raise ApiError(400, f"invalid tool_choice: {choice!r}", param="tool_choice")
    return choice


def json_format(response_format: ResponseFormat | None) -> bool | dict[str, Any]:
    if response_format is None or response_format.type == "text":
        return False
    if response_format.type == "json_object":
        return True
    if response_format.type == "json_schema":
        schema = response_format.json_schema.schema if response_format.json_schema else None
        return schema if isinstance(schema, dict) else True
    raise ApiError(400, f"invalid response_format type: {response_format.type!r}", param="response_format")


def thinks(effort: str | None, model: str, capable: bool, dialect: Dialect) -> bool:
    """Whether the answer starts with reasoning.

    Ollama's /v1 maps reasoning_effort to ``think`` (so asking a model that cannot think is a 400);
    OpenAI-compatible servers let reasoning models reason unless the effort is "none".
    """
    if effort is not None and effort not in _EFFORTS:
        raise ApiError(400, f"invalid reasoning_effort: {effort!r}", param="reasoning_effort")
    if dialect.ollama and effort not in (None, "none") and not capable:
        raise ApiError(400, f'"{model}" does not support thinking')
    return capable and effort != "none"


def completion_prompts(prompt: str | list[Any] | None, dialect: Dialect) -> list[str]:
    """The prompts of /v1/completions as texts; token-id prompts are seeded by their digits."""
    if prompt is None:
        if not dialect.ollama:
            raise ApiError(400, "prompt is required", param="prompt")
        return [""]
    if isinstance(prompt, str):
        return [prompt]
    if not dialect.prompt_lists:
        raise ApiError(
            400, "json: cannot unmarshal array into Go struct field CompletionRequest.prompt of type string"
        )
    if not prompt:
        raise ApiError(400, "prompt must not be empty", param="prompt")
    if all(isinstance(item, int) for item in prompt):
        return [" ".join(map(str, prompt))]
    texts = []
    for item in prompt:
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, list) and all(isinstance(token, int) for token in item):
            texts.append(" ".join(map(str, item)))
        else:
            raise ApiError(400, "prompt must be a string, a list of strings or token ids", param="prompt")
    return texts


def embedding_inputs(value: str | list[Any] | None, dialect: Dialect) -> list[str]:
    ollama = dialect.ollama
    if value is None or value == []:
        raise ApiError(400, "invalid input" if ollama else _INVALID_INPUT, param=None if ollama else "input")
    if isinstance(value, str):
        if not value and not ollama:
            raise ApiError(400, _INVALID_INPUT, param="input")
        return [value]
    if all(isinstance(item, str) for item in value):
        if not ollama and not all(value):
            raise ApiError(400, _INVALID_INPUT, param="input")
        return list(value)
    if ollama:
        raise ApiError(400, "invalid input type")
    if all(isinstance(item, int) for item in value):
        return [" ".join(map(str, value))]
    if all(isinstance(item, list) and item and all(isinstance(t, int) for t in item) for item in value):
        return [" ".join(map(str, item)) for item in value]
    raise ApiError(400, _INVALID_INPUT, param="input")


def encoding_format(value: str | None) -> bool:
    """True for base64 (little-endian float32), False for float lists."""
    if value is None or value.lower() == "float":
        return False
    if value.lower() == "base64":
        return True
    raise ApiError(
        400,
        f"Invalid value for 'encoding_format' = {value}. Supported values: ['float', 'base64'].",
        param="encoding_format",
    )
