"""Pinned properties and labels in the routing table, without any socket."""

from __future__ import annotations

import json

import pytest

from dataplane.routing.model_errors import LabelUnavailable, UnknownLabel
from dataplane.routing.pins import apply_pins, deep_merge
from dataplane.routing.table import RequestKind, RoutingTable
from shared.snapshot import BackendView, FrontendView, SnapshotContent, seal


def _table(frontends: list[FrontendView], backends: list[BackendView]) -> RoutingTable:
    content = SnapshotContent(frontends=tuple(frontends), backends=tuple(backends))
    return RoutingTable.build(seal(content, revision=1, generated_at="2025-01-01T00:00:00Z"))


def _backend(id: str, **kw: object) -> BackendView:
    return BackendView(id=id, base_url=f"http://{id}.test:11434", **kw)  # type: ignore[arg-type]


def test_deep_merge_merges_objects_and_replaces_everything_else() -> None:
    base = {"model": "m", "options": {"temperature": 0.2, "stop": ["a", "b"]}, "keep_alive": "5m"}
    over = {"options": {"num_ctx": 8192, "stop": ["c"]}, "keep_alive": "10m", "format": {"type": "object"}}
    merged = deep_merge(base, over)
    assert merged == {
        "model": "m",
        "options": {"temperature": 0.2, "stop": ["c"], "num_ctx": 8192},
        "keep_alive": "10m",
        "format": {"type": "object"},
    }
    assert base["options"] == {"temperature": 0.2, "stop": ["a", "b"]}  # inputs untouched
    merged["format"]["type"] = "changed"
    assert over["format"] == {"type": "object"}  # the result shares no object with the pins


def test_a_pinned_scalar_replaces_a_client_object_and_vice_versa() -> None:
    assert deep_merge({"options": {"a": 1}}, {"options": None}) == {"options": None}
    assert deep_merge({"options": 3}, {"options": {"a": 1}}) == {"options": {"a": 1}}


def test_apply_pins_reencodes_only_when_there_are_pins() -> None:
    body = b'{"model":"m",  "options":{"temperature":0.5}}'
    assert apply_pins(body, {}) is body
    pinned = apply_pins(body, {"options": {"num_ctx": 8192}, "keep_alive": "10m"})
    assert json.loads(pinned) == {
        "model": "m",
        "options": {"temperature": 0.5, "num_ctx": 8192},
        "keep_alive": "10m",
    }


def test_pools_hold_merged_pins_per_kind_backend_over_frontend() -> None:
    frontend = FrontendView(
        id="f",
        hostname="*",
        backends=("a", "b"),
        pinned_completions_properties={"options": {"num_ctx": 4096, "seed": 1}, "keep_alive": "1m"},
    )
    a = _backend("a", pinned_completions_properties={"options": {"num_ctx": 8192}})
    b = _backend("b", pinned_embeddings_properties={"truncate": False})
    route = _table([frontend], [a, b]).frontend_for("x")
    completions = route.pool(RequestKind.COMPLETIONS).pins
    assert completions == {
        "a": {"options": {"num_ctx": 8192, "seed": 1}, "keep_alive": "1m"},
        "b": {"options": {"num_ctx": 4096, "seed": 1}, "keep_alive": "1m"},
    }
    assert route.pool(RequestKind.EMBEDDINGS).pins == {"b": {"truncate": False}}


def test_a_model_pinned_by_the_frontend_is_for_routing_and_a_backend_pin_is_kept() -> None:
    frontend = FrontendView(
        id="f", hostname="*", backends=("a", "b"), pinned_completions_properties={"model": "m1", "seed": 1}
    )
    a = _backend("a", pinned_completions_properties={"model": "m2"})
    route = _table([frontend], [a, _backend("b")]).frontend_for("x")
    assert route.pinned_models == {RequestKind.COMPLETIONS: "m1"}
    assert route.pool(RequestKind.COMPLETIONS).pins == {"a": {"seed": 1, "model": "m2"}, "b": {"seed": 1}}


def test_without_pins_pools_have_none() -> None:
    route = _table([FrontendView(id="f", hostname="*", backends=("a",))], [_backend("a")]).frontend_for("x")
    assert route.pool(RequestKind.COMPLETIONS).pins == {}
    assert route.pool(RequestKind.EMBEDDINGS).pins == {}


def test_labels_match_exactly_and_case_insensitively() -> None:
    backends = [_backend("a", labels=("GPU",)), _backend("b", labels=("gpu-large", "eu")), _backend("c")]
    route = _table([FrontendView(id="f", hostname="*", backends=("a", "b", "c"))], backends).frontend_for("x")
    pool = route.pool(RequestKind.COMPLETIONS)
    choices = pool.choices("m")
    assert [t.id for t in pool.labelled(choices, "gpu")] == ["a"]  # not "gpu-large": no substring match
    assert [t.id for t in pool.labelled(choices, " EU ")] == ["b"]
    with pytest.raises(UnknownLabel, match="no backend of this frontend carries label 'gp'") as unknown:
        pool.labelled(choices, "gp")
    assert unknown.value.status == 400


def test_a_label_whose_backends_cannot_serve_now_is_a_503_with_retry_after() -> None:
    backends = [
        _backend("a", labels=("gpu",), healthy=False),
        _backend("b", labels=("eu",), models=("other",), models_known=True),
        _backend("c"),
    ]
    route = _table([FrontendView(id="f", hostname="*", backends=("a", "b", "c"))], backends).frontend_for("x")
    pool = route.pool(RequestKind.COMPLETIONS)
    for label in ("gpu", "EU"):  # a is unhealthy; b lacks the model
        with pytest.raises(LabelUnavailable, match=f"no backend with label '{label}'") as caught:
            pool.labelled(pool.choices("m"), label)
        assert caught.value.status == 503
        assert caught.value.headers == [(b"retry-after", b"5")]
        assert b'"code":"label_unavailable"' in caught.value.body("OpenAI")
