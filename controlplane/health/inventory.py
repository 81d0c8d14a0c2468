"""PURE: reading a backend's model lists (/api/tags, /api/ps, /v1/models) into one Inventory."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import msgspec

from shared.snapshot import LoadedModel

__all__ = [
    "MAX_INVENTORY_BYTES",
    "MAX_MODELS",
    "MAX_MODEL_NAME",
    "VLLM",
    "Inventory",
    "cap_loaded",
    "cap_models",
    "parse_loaded",
    "parse_openai_listing",
    "parse_openai_models",
    "parse_tags",
]

# The dialect of a backend whose /v1/models says ``"owned_by": "vllm"``: it takes vLLM's extra
# sampling options (top_k, min_p, repetition_penalty, chat_template_kwargs).
VLLM = "vllm"

# Bounds on what one backend's model lists may put into the snapshot (every data plane receives it):
# at most MAX_MODELS names (the first ones in sorted order), none longer than MAX_MODEL_NAME
# characters; the rest is dropped and counted (the admin health view shows how many). A listing body
# larger than MAX_INVENTORY_BYTES is not read at all.
MAX_MODELS = 4096
MAX_MODEL_NAME = 256
MAX_INVENTORY_BYTES = 16 * 1024 * 1024


@dataclass(slots=True)
class Inventory:
    """The models one backend has (and holds in memory), as last read."""

    known: bool = False
    models: tuple[str, ...] = ()
    loaded: tuple[LoadedModel, ...] = ()
    refreshed: datetime | None = None
    error: str = ""
    sizes: dict[str, int] = field(default_factory=dict)
    dialect: str = ""  # VLLM or "" (plain OpenAI-compatible, Ollama, or not read yet)
    dropped: int = 0  # names the last read left out (over MAX_MODELS or longer than MAX_MODEL_NAME)


class _Tag(msgspec.Struct):
    name: str = ""
    model: str = ""
    size: int = 0


class _Tags(msgspec.Struct):
    models: list[_Tag] | None = None


class _Running(msgspec.Struct):
    name: str = ""
    model: str = ""
    expires_at: str = ""
    size_vram: int = 0


class _Ps(msgspec.Struct):
    models: list[_Running] | None = None


class _OpenAIModel(msgspec.Struct):
    id: str
    owned_by: str | None = None


class _OpenAIModels(msgspec.Struct):
    data: list[_OpenAIModel]


def _decode(body: bytes, kind: type, what: str):  # type: ignore[no-untyped-def]
    try:
        return msgspec.json.decode(body, type=kind)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"unexpected {what} answer: {exc}") from None


def parse_tags(body: bytes) -> tuple[tuple[str, ...], dict[str, int]]:
    """Names (sorted) and sizes from an Ollama ``/api/tags`` body; ValueError if it is not one."""
    tags: _Tags = _decode(body, _Tags, "/api/tags")
    entries = [(t.name or t.model, t.size) for t in tags.models or () if t.name or t.model]
    return tuple(sorted({name for name, _ in entries})), dict(entries)


def parse_loaded(body: bytes) -> tuple[LoadedModel, ...]:
    """The models in memory from an Ollama ``/api/ps`` body, sorted by name."""
    ps: _Ps = _decode(body, _Ps, "/api/ps")
    loaded = [
        LoadedModel(name=m.name or m.model, expires_at=m.expires_at, size_vram=m.size_vram)
        for m in ps.models or ()
        if m.name or m.model
    ]
    return tuple(sorted(loaded, key=lambda m: m.name))


def parse_openai_listing(body: bytes) -> tuple[tuple[str, ...], str]:
    """Model ids (sorted) and the server's dialect from an OpenAI-compatible ``/v1/models`` body.

    vLLM marks every entry ``"owned_by": "vllm"``; any other owner (OpenAI's
    "system", Ollama's "library", llama.cpp's "llamacpp", ...) is the plain dialect "".
    """
    models: _OpenAIModels = _decode(body, _OpenAIModels, "/v1/models")
    names = tuple(sorted({m.id for m in models.data if m.id}))
    vllm = any((m.owned_by or "").strip().lower() == VLLM for m in models.data)
    return names, VLLM if vllm else ""


def parse_openai_models(body: bytes) -> tuple[str, ...]:
    """Model ids from an OpenAI-compatible ``/v1/models`` body, sorted."""
    return parse_openai_listing(body)[0]


def cap_models(names: tuple[str, ...]) -> tuple[tuple[str, ...], int]:
    """The sorted ``names`` within the bounds, and how many were left out."""
    fitting = [n for n in names if len(n) <= MAX_MODEL_NAME]
    kept = tuple(fitting[:MAX_MODELS])
    return kept, len(names) - len(kept)


def cap_loaded(loaded: tuple[LoadedModel, ...]) -> tuple[tuple[LoadedModel, ...], int]:
    """The sorted loaded models within the same bounds, and how many were left out."""
    fitting = [m for m in loaded if len(m.name) <= MAX_MODEL_NAME and len(m.expires_at) <= MAX_MODEL_NAME]
    kept = tuple(fitting[:MAX_MODELS])
    return kept, len(loaded) - len(kept)
