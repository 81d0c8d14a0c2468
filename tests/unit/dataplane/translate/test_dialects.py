"""``Translations.for_request`` picks the vLLM-extras variant by the backend's dialect (pure)."""

from __future__ import annotations

import json

import pytest

from dataplane.translate.common import BackendCall
from dataplane.translate.exchanges import VLLM, Translations
from tests.dataplane.translate.transcripts import counting_ids

OPTIONS = {"top_k": 40, "min_p": 0.1, "repeat_penalty": 1.2, "temperature": 0.3}
VLLM_FIELDS = {"top_k": 40, "min_p": 0.1, "repetition_penalty": 1.2, "temperature": 0.3}


def _sent(translations: Translations, path: str, body: dict[str, object], dialect: str) -> dict[str, object]:
    exchange = translations.for_request(path, "Ollama", "OpenAI", backend="b", dialect=dialect)
    assert exchange is not None
    call = exchange.request(json.dumps(body).encode(), now_ns=0, backend_model=None)
    assert isinstance(call, BackendCall)
    return json.loads(call.body)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/chat", {"model": "m", "messages": [{"role": "user", "content": "hi"}], "options": OPTIONS}),
        ("/api/generate", {"model": "m", "prompt": "hi", "options": OPTIONS}),
        ("/api/generate", {"model": "m", "prompt": "hi", "raw": True, "options": OPTIONS}),
    ],
)
def test_extras_only_for_vllm(path: str, body: dict[str, object]) -> None:
    translations = Translations(counting_ids())
    vllm = _sent(translations, path, body, VLLM)
    assert {key: vllm.get(key) for key in VLLM_FIELDS} == VLLM_FIELDS
    for dialect in ("", "sglang"):  # plain, and a dialect this data plane does not know
        plain = _sent(translations, path, body, dialect)
        assert plain["temperature"] == 0.3
        assert not {"top_k", "min_p", "repetition_penalty", "repeat_penalty"} & set(plain)


def test_think_bool_is_vllm_only() -> None:
    translations = Translations(counting_ids())
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "think": False}
    assert _sent(translations, "/api/chat", body, VLLM)["chat_template_kwargs"] == {"enable_thinking": False}
    assert "chat_template_kwargs" not in _sent(translations, "/api/chat", body, "")


def test_same_format_needs_no_exchange_whatever_the_dialect() -> None:
    translations = Translations(counting_ids())
    assert translations.for_request("/api/chat", "Ollama", "Ollama", backend="b", dialect=VLLM) is None
    assert (
        translations.for_request("/v1/chat/completions", "OpenAI", "OpenAI", backend="b", dialect=VLLM)
        is None
    )
