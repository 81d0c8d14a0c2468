"""Model lists both ways (OpenAI ``/v1/models`` <-> Ollama ``/api/tags``) and Ollama's model calls.

The routes fan out to every backend and union the entries by name; these functions translate one
backend's list and wrap the union. Ollama entries built from OpenAI models carry synthesized
details (size 0, a stable digest of backend and id) since OpenAI lists say nothing more. For models
an OpenAI backend serves, ``/api/show``, ``/api/ps`` and ``/api/pull`` are answered from such entries
so that ``ollama run`` and ollama-python work.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from dataplane.translate.common import JSON_CONTENT_TYPE, LocalReply, rfc3339, unix_seconds
from dataplane.translate.framing import encode_json, ndjson_line
from shared.errors import UpstreamProtocolError

__all__ = [
    "ollama_ps_body",
    "ollama_pull_reply",
    "ollama_show_body",
    "ollama_tags_body",
    "ollama_tags_entries",
    "openai_model_body",
    "openai_models_body",
    "openai_models_entries",
]


class OpenAIModel(msgspec.Struct, kw_only=True):
    id: str
    created: int | None = None
    max_model_len: int | None = None  # vLLM's context length


class OpenAIModels(msgspec.Struct, kw_only=True):
    data: list[OpenAIModel] | None = None


class OllamaModel(msgspec.Struct, kw_only=True):
    name: str = ""
    model: str = ""
    modified_at: str | None = None


class OllamaTags(msgspec.Struct, kw_only=True):
    models: list[OllamaModel] | None = None


def _decode(body: bytes, kind: type[Any]) -> Any:
    try:
        return msgspec.json.decode(body, type=kind)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise UpstreamProtocolError(f"backend sent an unreadable model list: {exc}") from None


def _details(context_length: int | None) -> dict[str, Any]:
    details: dict[str, Any] = {
        "parent_model": "",
        "format": "",
        "family": "",
        "families": None,
        "parameter_size": "",
        "quantization_level": "",
    }
    if context_length:
        details["context_length"] = context_length
    return details


def ollama_tags_entries(body: bytes, *, backend: str) -> list[dict[str, Any]]:
    """One OpenAI backend's ``/v1/models`` as ``/api/tags`` entries (``name`` and ``model`` both set)."""
    listing: OpenAIModels = _decode(body, OpenAIModels)
    entries = []
    for item in listing.data or []:
        digest = hashlib.sha256(f"{backend}/{item.id}".encode()).hexdigest()
        entries.append(
            {
                "name": item.id,
                "model": item.id,
                "modified_at": rfc3339((item.created or 0) * 1_000_000_000),
                "size": 0,
                "digest": digest,
                "details": _details(item.max_model_len),
            }
        )
    return entries


def ollama_show_body(entry: dict[str, Any], *, capabilities: list[str]) -> bytes:
    """``/api/show`` for a model an OpenAI backend serves, from its tags entry.

    ``model_info`` must be present (ollama-python requires the key) though no GGUF metadata fills it.
    """
    show = {"modelfile": "", "parameters": "", "template": "", "details": entry["details"], "model_info": {}}
    return encode_json({**show, "capabilities": capabilities, "modified_at": entry["modified_at"]})


def ollama_ps_body(entries: list[dict[str, Any]], *, expires_at_ns: int) -> bytes:
    """``/api/ps`` listing served models as loaded (an OpenAI backend keeps them in memory)."""
    expires_at = rfc3339(expires_at_ns)
    keep = ("name", "model", "digest", "details")
    models = [
        {**{key: entry[key] for key in keep}, "size": 0, "expires_at": expires_at, "size_vram": 0}
        for entry in entries
    ]
    return encode_json({"models": models})


def ollama_pull_reply(*, stream: bool) -> LocalReply:
    """A pull of a model the OpenAI backend already serves: plain success, one line when streamed."""
    if stream:
        return LocalReply(ndjson_line({"status": "success"}), content_type="application/x-ndjson")
    return LocalReply(encode_json({"status": "success"}), content_type=JSON_CONTENT_TYPE)


def _owner(name: str) -> str:
    # "host/namespace/model:tag" or "namespace/model:tag"; official models have no namespace.
    parts = name.split("/")
    return parts[-2] if len(parts) > 1 else "library"


def openai_models_entries(body: bytes) -> list[dict[str, Any]]:
    """One Ollama backend's ``/api/tags`` as ``/v1/models`` entries."""
    tags: OllamaTags = _decode(body, OllamaTags)
    entries = []
    for item in tags.models or []:
        name = item.model or item.name
        if name:
            entries.append(
                {
                    "id": name,
                    "object": "model",
                    "created": unix_seconds(item.modified_at),
                    "owned_by": _owner(name),
                }
            )
    return entries


def ollama_tags_body(entries: list[dict[str, Any]]) -> bytes:
    return encode_json({"models": entries})


def openai_model_body(entry: dict[str, Any]) -> bytes:
    """``/v1/models/{id}``: one entry of ``openai_models_entries``."""
    return encode_json(entry)


def openai_models_body(entries: list[dict[str, Any]]) -> bytes:
    """OpenAI's list; ``data`` is ``[]`` when empty, never null."""
    return encode_json({"object": "list", "data": entries})
