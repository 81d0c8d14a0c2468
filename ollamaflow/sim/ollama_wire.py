"""Ollama request bodies and the checks Ollama applies to them, with Ollama's error messages."""

from __future__ import annotations

import binascii
import re
from typing import Any, TypeVar

import msgspec

from ollamaflow.sim.asgi import ApiError
from ollamaflow.sim.wire_tools import ToolSpec

__all__ = [
    "ChatRequest",
    "CopyRequest",
    "DeleteRequest",
    "EmbedRequest",
    "EmbeddingsRequest",
    "GenerateRequest",
    "Message",
    "PullRequest",
    "ShowRequest",
    "check_format",
    "check_images",
    "decode",
    "keep_alive_seconds",
    "read_options",
    "think_value",
]

T = TypeVar("T")

KeepAlive = float | str | None


class Message(msgspec.Struct, kw_only=True):
    role: str = ""
    content: str | None = None
    thinking: str | None = None
    images: list[str] | None = None
    tool_calls: list[Any] | None = None
    tool_name: str | None = None
    tool_call_id: str | None = None


class GenerateRequest(msgspec.Struct, kw_only=True):
    model: str = ""
    prompt: str = ""
    suffix: str = ""
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None
    images: list[str] | None = None
    raw: bool = False
    stream: bool | None = None
    format: str | dict[str, Any] | None = None
    options: dict[str, Any] | None = None
    keep_alive: KeepAlive = None
    think: bool | str | None = None


class ChatRequest(msgspec.Struct, kw_only=True):
    model: str = ""
    messages: list[Message] | None = None
    tools: list[ToolSpec] | None = None
    stream: bool | None = None
    format: str | dict[str, Any] | None = None
    options: dict[str, Any] | None = None
    keep_alive: KeepAlive = None
    think: bool | str | None = None


class EmbedRequest(msgspec.Struct, kw_only=True):
    model: str = ""
    input: str | list[Any] | None = None
    truncate: bool | None = None
    dimensions: int | None = None
    options: dict[str, Any] | None = None
    keep_alive: KeepAlive = None


class EmbeddingsRequest(msgspec.Struct, kw_only=True):
    model: str = ""
    prompt: str = ""
    options: dict[str, Any] | None = None
    keep_alive: KeepAlive = None


class ShowRequest(msgspec.Struct, kw_only=True):
    model: str = ""
    name: str = ""
    verbose: bool = False


class PullRequest(msgspec.Struct, kw_only=True):
    model: str = ""
    name: str = ""
    insecure: bool = False
    stream: bool | None = None


class DeleteRequest(msgspec.Struct, kw_only=True):
    model: str = ""
    name: str = ""


class CopyRequest(msgspec.Struct, kw_only=True):
    source: str = ""
    destination: str = ""


def decode(body: bytes, kind: type[T]) -> T:
    if not body.strip():
        raise ApiError(400, "missing request body")
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.DecodeError as exc:
        raise ApiError(400, str(exc)) from None


_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)([^\d.]*)")


def _go_duration(text: str) -> float:
    """Go's ``time.ParseDuration`` in seconds, with its error messages."""
    rest, sign = text, 1.0
    if rest[:1] in ("+", "-"):
        sign, rest = (-1.0 if rest[0] == "-" else 1.0), rest[1:]
    if rest == "0":
        return 0.0
    if not rest:
        raise ApiError(400, f'time: invalid duration "{text}"')
    total, pos = 0.0, 0
    while pos < len(rest):
        part = _DURATION_PART.match(rest, pos)
        if part is None:
            raise ApiError(400, f'time: invalid duration "{text}"')
        number, unit = part.groups()
        if not unit:
            raise ApiError(400, f'time: missing unit in duration "{text}"')
        if unit not in _UNITS:
            raise ApiError(400, f'time: unknown unit "{unit}" in duration "{text}"')
        total += float(number) * _UNITS[unit]
        pos = part.end()
    return sign * total


def keep_alive_seconds(value: KeepAlive, default: float) -> float:
    """Seconds to keep the model loaded; negative means forever, 0 unload at once."""
    if value is None:
        return default
    seconds = _go_duration(value) if isinstance(value, str) else float(value)
    return -1.0 if seconds < 0 else seconds


def read_options(options: dict[str, Any] | None) -> tuple[int, tuple[str, ...]]:
    """(num_predict, stop) with Ollama's type checks; other options are accepted and ignored."""
    if not options:
        return 0, ()
    limit = options.get("num_predict")
    if limit is None:
        limit = 0
    elif isinstance(limit, bool) or not isinstance(limit, int | float):
        raise ApiError(400, 'option "num_predict" must be of type integer')
    stop = options.get("stop")
    if stop is None:
        stop = []
    elif not isinstance(stop, list):
        raise ApiError(400, 'option "stop" must be of type array')
    elif not all(isinstance(item, str) for item in stop):
        raise ApiError(400, 'option "stop" must be of an array of strings')
    return int(limit), tuple(stop)


_THINK_LEVELS = ("high", "medium", "low", "max")


def think_value(think: bool | str | None, model: str, capable: bool) -> bool:
    """Whether the model thinks: unset means yes on a thinking model; asking a model that cannot is a 400."""
    if isinstance(think, str) and think not in _THINK_LEVELS:
        raise ApiError(
            400, f'invalid think value: "{think}" (must be "high", "medium", "low", true, or false)'
        )
    wanted = capable if think is None else bool(think)
    if wanted and not capable:
        raise ApiError(400, f'"{model}" does not support thinking')
    return wanted


def check_format(value: str | dict[str, Any] | None) -> bool | dict[str, Any]:
    """``format``: "" or absent = text, "json" = JSON mode, an object = JSON schema."""
    if value is None or value == "":
        return False
    if value == "json":
        return True
    if isinstance(value, dict):
        return value
    raise ApiError(400, f'invalid format: "\\"{value}\\""; expected "json" or a valid JSON Schema object')


def check_images(images: list[str] | None) -> None:
    """Images are bare base64 (Go decodes them strictly; a ``data:`` prefix is an error)."""
    for image in images or ():
        try:
            binascii.a2b_base64(image, strict_mode=True)
        except (binascii.Error, ValueError):
            bad = next((i for i, ch in enumerate(image) if not (ch.isalnum() or ch in "+/=")), len(image))
            raise ApiError(400, f"illegal base64 data at input byte {bad}") from None
