"""Model names as Ollama compares them, and the pure planning of model synchronisation."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from controlplane.health.inventory import parse_loaded, parse_openai_models, parse_tags
from controlplane.sync.plan import (
    PullJob,
    missing_models,
    required_by_backend,
    unrequired_models,
    worth_restarting,
)
from shared.models import model_key, same_model


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("llama3", "llama3:latest"),
        ("LLaMA3:Latest", "llama3"),
        ("registry.ollama.ai/library/llama3:latest", "llama3"),
        ("library/qwen2.5:0.5b", "qwen2.5:0.5b"),
        ("myhost:5000/team/model", "myhost:5000/team/model:latest"),
    ],
)
def test_same_model(a: str, b: str) -> None:
    assert same_model(a, b)


def test_different_tags_are_different_models() -> None:
    assert not same_model("llama3", "llama3:8b")
    assert not same_model("team/llama3", "llama3")
    assert model_key("  Phi3 ") == "phi3:latest"


@dataclass
class Frontend:
    backends: list[str]
    required_models: list[str] = field(default_factory=list)


def test_required_models_are_the_union_over_the_frontends_of_a_backend() -> None:
    required = required_by_backend(
        [
            Frontend(["a", "b"], ["llama3", "phi3"]),
            Frontend(["b", "c"], ["llama3:latest", "qwen2.5:0.5b", " "]),
            Frontend(["d"], []),
        ]
    )
    assert required == {
        "a": ("llama3", "phi3"),
        "b": ("llama3", "phi3", "qwen2.5:0.5b"),
        "c": ("llama3:latest", "qwen2.5:0.5b"),
    }


def test_missing_and_unrequired_models_compare_normalised_names() -> None:
    present = ["llama3:latest", "all-minilm:latest", "qwen2.5:0.5b"]
    assert missing_models(["LLAMA3", "phi3", "qwen2.5:1.5b"], present) == ("phi3", "qwen2.5:1.5b")
    assert unrequired_models(["llama3", "qwen2.5:0.5b"], present) == ("all-minilm:latest",)


def test_pull_progress_sums_the_layers() -> None:
    job = PullJob(backend="b", model="llama3")
    for line in [
        {"status": "pulling manifest"},
        {"status": "pulling aaa", "digest": "sha256:aaa", "total": 1000, "completed": 250},
        {"status": "pulling bbb", "digest": "sha256:bbb", "total": 10},
        {"status": "pulling aaa", "digest": "sha256:aaa", "total": 1000, "completed": 1000},
        {"status": "verifying sha256 digest"},
    ]:
        job.progress(line)
    assert (job.completed, job.total, job.status) == (1000, 1010, "verifying sha256 digest")
    assert job.key == ("b", "llama3:latest")


def test_inventory_parsers() -> None:
    models, sizes = parse_tags(b'{"models":[{"name":"b:latest","size":2},{"name":"a:1b","size":1}]}')
    assert models == ("a:1b", "b:latest") and sizes == {"a:1b": 1, "b:latest": 2}
    assert parse_tags(b'{"models":null}') == ((), {})
    loaded = parse_loaded(b'{"models":[{"name":"a:1b","expires_at":"2030-01-01T00:00:00Z","size_vram":7}]}')
    assert [(m.name, m.expires_at, m.size_vram) for m in loaded] == [("a:1b", "2030-01-01T00:00:00Z", 7)]
    assert parse_openai_models(b'{"object":"list","data":[{"id":"m2"},{"id":"m1"}]}') == ("m1", "m2")
    with pytest.raises(ValueError, match="/api/tags"):
        parse_tags(b"<html>")


def test_which_finished_pulls_start_again() -> None:
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    before, later = t0 - timedelta(seconds=1), t0 + timedelta(minutes=1)
    done = PullJob(backend="b", model="m", state="done", updated=t0)
    assert not worth_restarting(done, None, before)  # the list predates the pull: not missing really
    assert not worth_restarting(done, None, None)
    assert worth_restarting(done, None, later)  # read after the pull and still lacking it
    failed = PullJob(backend="b", model="m", state="failed", updated=t0)
    assert not worth_restarting(failed, before, later)  # healthy all along: stays failed
    assert not worth_restarting(failed, None, later)
    assert worth_restarting(failed, later, None)  # the backend came back after the failure
