"""Model names compared the way Ollama compares them (pure; shared by both planes).

Ollama treats ``llama3``, ``llama3:latest``, ``LLaMA3:Latest`` and
``registry.ollama.ai/library/llama3:latest`` as one model: the tag defaults to ``latest``, the
default registry and namespace may be left out, and case does not matter.
"""

from __future__ import annotations

__all__ = ["model_key", "same_model"]

_DEFAULT_PREFIXES = ("registry.ollama.ai/library/", "registry.ollama.ai/", "library/")


def model_key(name: str) -> str:
    """The canonical form of ``name``: lower case, default registry/namespace dropped, tag ``latest``
    when none is given. Names that differ only in those respects get the same key."""
    key = name.strip().lower()
    for prefix in _DEFAULT_PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix) :]
            break
    if not key:
        return key
    # A colon before the last "/" belongs to a registry host:port, not to a tag.
    last = key.rsplit("/", 1)[-1]
    if ":" not in last and "@" not in last:
        key += ":latest"
    return key


def same_model(a: str, b: str) -> bool:
    return model_key(a) == model_key(b)
