"""How the /v1 routes differ between an OpenAI-compatible server (vLLM-like) and Ollama's /v1 layer.

The simulator serves /v1 in both modes from one implementation; these flags are the differences a
proxy can observe (the OpenAI API as the official client expects it, and Ollama's OpenAI-compatible
layer; docs/conformance.md lists what each endpoint does with each backend format).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["OLLAMA_V1", "OPENAI", "VLLM", "Dialect"]


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    system_fingerprint: str | None
    # OpenAI puts "usage": null on every chunk when stream_options.include_usage is set.
    usage_null_on_chunks: bool
    # Ollama streams a tool call whole (complete arguments in one delta); OpenAI in fragments.
    whole_tool_calls: bool
    # Assistant content next to tool calls: OpenAI null, Ollama "".
    tool_call_content: str | None
    owned_by: str
    # Ollama's /v1/models answers "data": null when nothing is installed.
    null_empty_model_list: bool
    model_not_found_code: str | None
    honours_max_completion_tokens: bool
    honours_tool_choice: bool
    # OpenAI-compatible servers serve chat and embeddings from different models; Ollama embeds with any.
    embeddings_need_embedding_model: bool
    # Ollama's /v1/completions takes a string prompt only.
    prompt_lists: bool
    # max_tokens of /v1/completions when the request sets none (OpenAI: 16; Ollama: no limit).
    completion_default_max_tokens: int
    # An error after the stream started: OpenAI-like servers send an error event (then [DONE]);
    # Ollama's /v1 layer loses it and ends the body after an empty delta.
    reports_stream_errors: bool
    # vLLM's /v1/models entries also carry the served context length (and root/parent).
    max_model_len: int | None = None

    @property
    def ollama(self) -> bool:
        """Ollama's /v1 layer, which words its errors as the native API does."""
        return self.name == "ollama"


OPENAI = Dialect(
    name="openai",
    system_fingerprint=None,
    usage_null_on_chunks=True,
    whole_tool_calls=False,
    tool_call_content=None,
    owned_by="ollamaflow-sim",
    null_empty_model_list=False,
    model_not_found_code="model_not_found",
    honours_max_completion_tokens=True,
    honours_tool_choice=True,
    embeddings_need_embedding_model=True,
    prompt_lists=True,
    completion_default_max_tokens=16,
    reports_stream_errors=True,
)

OLLAMA_V1 = Dialect(
    name="ollama",
    system_fingerprint="fp_ollama",
    usage_null_on_chunks=False,
    whole_tool_calls=True,
    tool_call_content="",
    owned_by="library",
    null_empty_model_list=True,
    model_not_found_code=None,
    honours_max_completion_tokens=False,
    honours_tool_choice=False,
    embeddings_need_embedding_model=False,
    prompt_lists=False,
    completion_default_max_tokens=0,
    reports_stream_errors=False,
)

# An OpenAI-compatible server that says it is vLLM: ``owned_by: "vllm"`` and ``max_model_len`` in its
# model list, which is how OllamaFlow's control plane tells vLLM backends apart.
VLLM = replace(OPENAI, name="vllm", owned_by="vllm", max_model_len=8192)
