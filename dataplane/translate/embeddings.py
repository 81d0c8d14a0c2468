"""Embedding replies both ways: OpenAI ``/v1/embeddings`` <-> Ollama ``/api/embed`` and ``/api/embeddings``.

Ollama's ``/api/embed`` vectors are L2-normalized, so vectors from OpenAI backends are normalized
for it; the legacy ``/api/embeddings`` is not. OpenAI's ``base64`` encoding is the little-endian
float32 bytes of the vector.
"""

from __future__ import annotations

import base64
import math
import struct
from typing import Any

import msgspec

from dataplane.translate.framing import encode_json
from shared.errors import UpstreamProtocolError

__all__ = [
    "decode_base64_vector",
    "encode_base64_vector",
    "ollama_embed_reply",
    "ollama_embeddings_reply",
    "openai_embeddings_reply",
]


class Datum(msgspec.Struct, kw_only=True):
    index: int = 0
    embedding: list[float] | str


class Usage(msgspec.Struct, kw_only=True):
    prompt_tokens: int = 0


class OpenAIEmbeddings(msgspec.Struct, kw_only=True):
    data: list[Datum]
    usage: Usage | None = None


class OllamaEmbed(msgspec.Struct, kw_only=True):
    embeddings: list[list[float]]
    prompt_eval_count: int = 0


def encode_base64_vector(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def decode_base64_vector(text: str) -> list[float]:
    raw = base64.b64decode(text)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def _normalized(vector: list[float]) -> list[float]:
    norm = math.sqrt(math.fsum(value * value for value in vector))
    return [value / norm for value in vector] if norm > 0 else vector


def _decode(body: bytes, kind: type[Any]) -> Any:
    try:
        return msgspec.json.decode(body, type=kind)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise UpstreamProtocolError(f"backend sent an unreadable embeddings reply: {exc}") from None


def _vectors(reply: OpenAIEmbeddings) -> list[list[float]]:
    ordered = sorted(reply.data, key=lambda datum: datum.index)
    return [
        decode_base64_vector(datum.embedding) if isinstance(datum.embedding, str) else datum.embedding
        for datum in ordered
    ]


def ollama_embed_reply(body: bytes, *, model: str, started_ns: int, now_ns: int) -> bytes:
    """An OpenAI embeddings reply as ``/api/embed``'s: normalized vectors and metrics."""
    reply: OpenAIEmbeddings = _decode(body, OpenAIEmbeddings)
    out: dict[str, Any] = {
        "model": model,
        "embeddings": [_normalized(vector) for vector in _vectors(reply)],
        "total_duration": now_ns - started_ns,
    }
    if reply.usage is not None and reply.usage.prompt_tokens:
        out["prompt_eval_count"] = reply.usage.prompt_tokens
    return encode_json(out)


def ollama_embeddings_reply(body: bytes) -> bytes:
    """An OpenAI embeddings reply as the legacy ``/api/embeddings``'s ``{"embedding": [...]}``."""
    vectors = _vectors(_decode(body, OpenAIEmbeddings))
    if not vectors:
        raise UpstreamProtocolError("backend returned no embedding")
    return encode_json({"embedding": vectors[0]})


def openai_embeddings_reply(body: bytes, *, model: str, as_base64: bool) -> bytes:
    """An ``/api/embed`` reply as OpenAI's embeddings list, float or base64 as the client asked."""
    reply: OllamaEmbed = _decode(body, OllamaEmbed)
    data = [
        {
            "object": "embedding",
            "index": index,
            "embedding": encode_base64_vector(vector) if as_base64 else vector,
        }
        for index, vector in enumerate(reply.embeddings)
    ]
    tokens = reply.prompt_eval_count
    return encode_json(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )
