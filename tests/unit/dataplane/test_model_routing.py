"""Model-aware routing in the pure table: who may serve a model, names compared as Ollama does,
unknown inventories, and the not-found / being-pulled answers in both formats."""

from __future__ import annotations

import json
import random

import pytest

from dataplane.routing.table import ModelNotFound, ModelPulling, RequestKind, RoutingTable
from shared.snapshot import BackendView, FrontendView, SnapshotContent, seal

COMPLETIONS = RequestKind.COMPLETIONS


def _backend(id: str, models: tuple[str, ...] | None, **kw: object) -> BackendView:
    known = {"models": models, "models_known": True} if models is not None else {}
    return BackendView(id=id, base_url=f"http://{id}.test:11434", **known, **kw)  # type: ignore[arg-type]


def _pool(backends: list[BackendView], **frontend: object):  # type: ignore[no-untyped-def]
    ids = tuple(b.id for b in backends)
    view = FrontendView(id="f", hostname="*", backends=ids, **frontend)  # type: ignore[arg-type]
    content = SnapshotContent(frontends=(view,), backends=tuple(backends))
    snapshot = seal(content, revision=1, generated_at="2025-01-01T00:00:00Z")
    table = RoutingTable.build(snapshot, rng=random.Random(1))
    return table.frontend_for("x").pool(COMPLETIONS)


def _ids(targets: tuple) -> list[str]:  # type: ignore[type-arg]
    return [t.id for t in targets]


def test_a_model_goes_only_to_backends_that_list_it_under_any_spelling() -> None:
    pool = _pool(
        [
            _backend("a", ("llama3:latest", "qwen2.5:0.5b")),
            _backend("b", ("qwen2.5:0.5b",)),
            _backend("c", ("registry.ollama.ai/library/llama3:latest",)),
        ]
    )
    for spelling in ("llama3", "llama3:latest", "LLaMA3:Latest", "library/llama3"):
        assert _ids(pool.choices(spelling)) == ["a", "c"]
    assert _ids(pool.choices("qwen2.5:0.5b")) == ["a", "b"]
    choices = pool.choices("llama3")
    assert [pool.pick(choices).id for _ in range(4)] == ["a", "c", "a", "c"]
    assert _ids(pool.order(choices).order) == ["a", "c"]  # the choice, then the failover sequence


def test_a_backend_with_an_unknown_inventory_may_have_every_model() -> None:
    pool = _pool([_backend("known", ("llama3:latest",)), _backend("new", None)])
    assert _ids(pool.choices("llama3")) == ["known", "new"]
    assert _ids(pool.choices("mistral")) == ["new"]


def test_unhealthy_backends_are_never_chosen_even_if_they_have_the_model() -> None:
    pool = _pool([_backend("sick", ("llama3:latest",), healthy=False), _backend("ok", ("qwen2.5:0.5b",))])
    assert _ids(pool.choices("qwen2.5:0.5b")) == ["ok"]
    with pytest.raises(ModelNotFound):
        pool.choices("llama3")


def test_an_empty_model_name_goes_anywhere_for_the_backend_to_answer() -> None:
    pool = _pool([_backend("a", ("llama3:latest",)), _backend("b", ())])
    assert _ids(pool.choices("")) == ["a", "b"]


def test_a_missing_model_is_ollamas_and_openais_404() -> None:
    pool = _pool([_backend("a", ("llama3:latest",))])
    with pytest.raises(ModelNotFound) as caught:
        pool.choices("mistral:7b")
    error = caught.value
    assert error.status == 404 and error.headers == []
    assert json.loads(error.body("Ollama")) == {"error": "model 'mistral:7b' not found"}
    assert json.loads(error.body("OpenAI")) == {
        "error": {
            "message": "The model `mistral:7b` does not exist.",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }


def test_a_required_model_nobody_has_yet_is_being_pulled() -> None:
    pool = _pool([_backend("a", ("llama3:latest",))], required_models=("Mistral",))
    with pytest.raises(ModelPulling) as caught:
        pool.choices("mistral:latest")
    error = caught.value
    assert error.status == 503
    assert dict(error.headers)[b"retry-after"].isdigit()
    assert "being pulled" in json.loads(error.body("Ollama"))["error"]
    assert json.loads(error.body("OpenAI"))["error"]["code"] == "model_not_found"
    with pytest.raises(ModelNotFound):
        pool.choices("phi3")
