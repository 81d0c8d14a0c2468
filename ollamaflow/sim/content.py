"""Deterministic "model output": answer words, token counts, embeddings, tool-call arguments.

Everything here is a pure function of its inputs, so the same request always gets the same answer
from every simulator, and tests can compute what to expect.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import struct
from typing import Any

import msgspec

__all__ = [
    "answer_pieces",
    "context_tokens",
    "count_tokens",
    "embedding",
    "embedding_base64",
    "json_answer",
    "legacy_embedding",
    "split_pieces",
    "thinking_pieces",
    "tool_arguments",
    "tool_call_id",
    "value_for_schema",
]

_WORDS = (
    "the", "quiet", "river", "carries", "light", "over", "stone", "and", "a", "small", "garden",
    "grows", "near", "old", "bridge", "where", "morning", "fog", "settles", "softly", "on", "green",
    "hills", "while", "birds", "sing", "to", "distant", "mountains", "under", "clear", "blue", "sky",
    "every", "path", "leads", "home", "through", "silver", "fields", "of", "tall", "grass", "with",
    "warm", "wind", "from", "south", "bright", "stars", "follow", "evening", "tide", "across",
    "calm", "water", "slow", "clouds", "drift", "above", "wooden", "roofs", "in", "valley",
)  # fmt: skip
_THOUGHTS = ("let", "me", "think", "about", "this", "carefully", "first", "then", "answer")
_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
_CAPITALISED = re.compile(r"\b[A-Z][A-Za-z0-9_-]*")


def _bytes(seed: str, count: int) -> bytes:
    return hashlib.shake_256(seed.encode("utf-8", "surrogatepass")).digest(count)


def answer_pieces(seed: str, count: int) -> list[str]:
    """``count`` tokens of a sentence chosen by ``seed``: ``["Quiet", " river", ..., " sky."]``."""
    picks = _bytes(seed, count)
    words = [_WORDS[b % len(_WORDS)] for b in picks]
    words[0] = words[0].capitalize()
    words[-1] += "."
    return [words[0]] + [" " + word for word in words[1:]]


def thinking_pieces(seed: str) -> list[str]:
    """What a thinking model "thinks" before it answers."""
    extra = _WORDS[_bytes("think:" + seed, 1)[0] % len(_WORDS)]
    words = [*_THOUGHTS, extra]
    return [words[0].capitalize()] + [" " + word for word in words[1:-1]] + [" " + words[-1] + "."]


def split_pieces(text: str, size: int = 4) -> list[str]:
    """Cut text into stream-sized pieces (about one token each)."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def count_tokens(text: str) -> int:
    """A stand-in for a tokenizer: about four characters per token."""
    return (len(text) + 3) // 4


def context_tokens(seed: str, count: int) -> list[int]:
    """Token ids for the deprecated ``context`` of /api/generate."""
    return list(struct.unpack(f"<{count}H", _bytes("ctx:" + seed, 2 * count)))


def _raw_vector(text: str, dimensions: int) -> tuple[int, ...]:
    return struct.unpack(f"<{dimensions}h", _bytes("embed:" + text, 2 * dimensions))


def embedding(text: str, dimensions: int) -> list[float]:
    """An L2-normalised vector derived from ``text``; the first ``d`` values of a longer vector,
    renormalised, equal the ``d``-dimensional vector (so ``dimensions`` behaves as Ollama's)."""
    raw = _raw_vector(text, dimensions)
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return [v / norm for v in raw]


def legacy_embedding(text: str, dimensions: int) -> list[float]:
    """/api/embeddings returns vectors that are not normalised."""
    return [v / 4096.0 for v in _raw_vector(text, dimensions)]


def embedding_base64(vector: list[float]) -> str:
    """OpenAI's ``encoding_format: base64``: little-endian float32 bytes."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def tool_call_id(seed: str) -> str:
    """``call_`` + 8 characters of ``[a-z0-9]``, like Ollama's ids, but reproducible."""
    return "call_" + "".join(_ID_ALPHABET[b % len(_ID_ALPHABET)] for b in _bytes("id:" + seed, 8))


def _string_value(message: str, key: str, tool_name: str) -> str:
    """The last proper noun of the message ("weather in Paris? Use x" -> "Paris"), else a word.

    A proper noun here is a capitalised word that does not start a sentence.
    """
    words = [
        match.group(0)
        for match in _CAPITALISED.finditer(message)
        if match.group(0) != tool_name and message[: match.start()].rstrip()[-1:] not in ("", ".", "?", "!")
    ]
    if words:
        return words[-1]
    return _WORDS[_bytes(f"{key}:{message}", 1)[0] % len(_WORDS)]


def value_for_schema(schema: Any, message: str, key: str = "", tool_name: str = "") -> Any:
    """A value that satisfies a (simple) JSON schema, derived from ``message``."""
    if not isinstance(schema, dict):
        return _string_value(message, key, tool_name)
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    kind = schema.get("type", "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object":
        return tool_arguments(schema, message, tool_name)
    if kind == "array":
        return [value_for_schema(schema.get("items"), message, key, tool_name)]
    if kind == "integer":
        return len(message.split())
    if kind == "number":
        return len(message.split()) / 2
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _string_value(message, key, tool_name)


def tool_arguments(parameters: Any, message: str, tool_name: str = "") -> dict[str, Any]:
    """Arguments for a call: a value for every required property (every property if none is)."""
    if not isinstance(parameters, dict):
        return {}
    properties = parameters.get("properties")
    if not isinstance(properties, dict):
        return {}
    required = parameters.get("required")
    keys = (
        [k for k in required if k in properties]
        if isinstance(required, list) and required
        else list(properties)
    )
    return {key: value_for_schema(properties[key], message, key, tool_name) for key in keys}


def json_answer(schema: Any, seed: str, count: int) -> str:
    """A JSON answer for ``format``/``response_format``: the schema's shape, or ``{"answer": ...}``."""
    if isinstance(schema, dict) and schema.get("type", "object") == "object" and schema.get("properties"):
        value: Any = tool_arguments(schema, seed)
    else:
        value = {"answer": "".join(answer_pieces(seed, count))}
    return msgspec.json.encode(value).decode()
