"""The simulated models: facts derived from a name, name matching, and what is installed and loaded."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace

__all__ = [
    "FOREVER",
    "Loaded",
    "ModelCard",
    "ModelStore",
    "card_for",
    "exact_key",
    "is_valid_ollama_name",
    "ollama_key",
]

# Ollama keeps a model with a negative keep_alive "forever": its expiry is now + max Go duration.
FOREVER = float(2**63) / 1e9

_SIZE_TAG = re.compile(r"(\d+(?:\.\d+)?)([bm])\b")
_PART = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}"
_VALID_NAME = re.compile(rf"^(?:[A-Za-z0-9_.:-]+/)?(?:{_PART}/)?{_PART}(?::{_PART})?$")


@dataclass(frozen=True, slots=True)
class ModelCard:
    """What the simulator says about one installed model (tags, show, ps, /v1/models)."""

    name: str
    digest: str
    size: int
    family: str
    parameter_size: str
    quantization_level: str
    embedding: bool
    thinking: bool
    context_length: int
    embedding_length: int

    @property
    def capabilities(self) -> tuple[str, ...]:
        if self.embedding:
            return ("embedding",)
        return ("completion", "tools", "thinking") if self.thinking else ("completion", "tools")


def card_for(name: str) -> ModelCard:
    """Deterministic facts for a model name: the same name always gets the same digest and size.

    Embedding models are those whose name contains ``minilm`` or ``embed``; thinking models those
    containing ``think``, ``qwen3`` or ``deepseek-r1``.
    """
    lower = name.lower()
    base = lower.rsplit("/", 1)[-1].split(":", 1)[0]
    tag = lower.rsplit("/", 1)[-1].partition(":")[2]
    embedding = "minilm" in lower or "embed" in lower
    thinking = not embedding and ("think" in lower or "qwen3" in lower or "deepseek-r1" in lower)
    sized = _SIZE_TAG.search(tag) or _SIZE_TAG.search(base)
    if sized:
        parameter_size = sized.group(1) + sized.group(2).upper()
        params = float(sized.group(1)) * (1e9 if sized.group(2) == "b" else 1e6)
    else:
        parameter_size, params = ("23M", 23e6) if embedding else ("3.2B", 3.2e9)
    # Ollama's families: "llama" for every llama, "qwen2" for qwen2.5, "bert" for MiniLM.
    family = re.match(r"llama|[a-z]+\d*", base)
    return ModelCard(
        name=name,
        digest=hashlib.sha256(lower.encode()).hexdigest(),
        size=int(params * (2.0 if embedding else 0.6)),
        family="bert" if "minilm" in base else (family.group(0) if family else "llama"),
        parameter_size=parameter_size,
        quantization_level="F16" if embedding else "Q4_K_M",
        embedding=embedding,
        thinking=thinking,
        context_length=512 if embedding else 131072,
        embedding_length=384 if "minilm" in lower else (768 if embedding else 3072),
    )


def ollama_key(name: str) -> str:
    """Ollama's identity of a name: case-insensitive, ``x`` == ``x:latest`` == ``library/x``."""
    key = name.strip().lower()
    for prefix in ("registry.ollama.ai/", "library/"):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    if ":" not in key.rsplit("/", 1)[-1]:
        key += ":latest"
    return key


def exact_key(name: str) -> str:
    """OpenAI-compatible servers (vLLM, llama.cpp) serve ids exactly as configured."""
    return name


def is_valid_ollama_name(name: str) -> bool:
    return bool(_VALID_NAME.match(name.strip()))


def display_name(name: str, ollama: bool) -> str:
    """How a listing shows a name: Ollama always spells out the tag."""
    name = name.strip()
    if ollama and ":" not in name.rsplit("/", 1)[-1]:
        return name + ":latest"
    return name


@dataclass(slots=True)
class Loaded:
    card: ModelCard
    # Unix seconds; FOREVER-ish for keep_alive < 0.
    expires_at: float


class ModelStore:
    """Installed models (changed by pull, copy, delete) and loaded ones (for /api/ps)."""

    def __init__(self, names: tuple[str, ...], ollama: bool, now: float) -> None:
        self._ollama = ollama
        self._key = ollama_key if ollama else exact_key
        self._installed: dict[str, tuple[ModelCard, float]] = {}
        self._loaded: dict[str, Loaded] = {}
        # Names as clients spell them -> store key ("" for names Ollama would reject).
        self._keys: dict[str, str] = {}
        self.replace_all(names, now)

    def replace_all(self, names: tuple[str, ...], now: float) -> None:
        self._installed.clear()
        self._loaded.clear()
        for name in names:
            self.add(name, now)

    def key(self, name: str) -> str:
        key = self._keys.get(name)
        if key is None:
            key = "" if self._ollama and not is_valid_ollama_name(name) else self._key(name)
            if len(self._keys) >= 4096:
                self._keys.clear()
            self._keys[name] = key
        return key

    def find(self, name: str) -> ModelCard | None:
        found = self._installed.get(self.key(name))
        return found[0] if found else None

    def installed(self) -> list[tuple[ModelCard, float]]:
        """(card, modified_at) pairs, most recently modified first, like Ollama lists them."""
        return sorted(self._installed.values(), key=lambda item: -item[1])

    def modified_at(self, card: ModelCard) -> float:
        return self._installed[self.key(card.name)][1]

    def add(self, name: str, now: float, like: ModelCard | None = None) -> ModelCard:
        shown = display_name(name, self._ollama)
        card = replace(like, name=shown) if like else card_for(shown)
        self._installed[self.key(name)] = (card, now)
        return card

    def remove(self, name: str) -> bool:
        key = self.key(name)
        self._loaded.pop(key, None)
        return self._installed.pop(key, None) is not None

    def keep_loaded(self, card: ModelCard, keep_alive_s: float, now: float) -> bool:
        """Mark ``card`` loaded until now + keep_alive; returns whether it was loaded before.

        keep_alive 0 unloads, a negative one keeps it loaded for good (Ollama's semantics).
        """
        key = self.key(card.name)
        loaded = self._loaded.get(key)
        was_loaded = loaded is not None and loaded.expires_at > now
        if keep_alive_s == 0:
            self._loaded.pop(key, None)
            return was_loaded
        expires = now + (FOREVER if keep_alive_s < 0 else keep_alive_s)
        if loaded is None:
            self._loaded[key] = Loaded(card, expires)
        else:
            loaded.card, loaded.expires_at = card, expires
        return was_loaded

    def unload(self, card: ModelCard) -> None:
        self._loaded.pop(self.key(card.name), None)

    def running(self, now: float) -> list[Loaded]:
        """Loaded models, the one expiring last first, as /api/ps orders them."""
        for key in [key for key in self._loaded if not self._is_loaded(key, now)]:
            del self._loaded[key]
        return sorted(self._loaded.values(), key=lambda loaded: -loaded.expires_at)

    def _is_loaded(self, key: str, now: float) -> bool:
        loaded = self._loaded.get(key)
        return loaded is not None and loaded.expires_at > now
