"""The aggregation of pull progress over a frontend's backends (pure)."""

from __future__ import annotations

from dataplane.models.pull_progress import FINAL_STEPS, PullStream
from shared.wire.models import LayerProgress, ModelReply, PullProgress

SOURCE = "cp1"
BIG = "sha256:" + "a" * 64
SMALL = "sha256:" + "b" * 64


def progress(backend: str, seq: int, state: str = "pulling", **layers: tuple[int, int]) -> PullProgress:
    return PullProgress(
        source=SOURCE,
        seq=seq,
        backend=backend,
        model="llama3.2",
        state=state,  # type: ignore[arg-type]
        layers={
            (BIG if name == "big" else SMALL): LayerProgress(completed=c, total=t)
            for name, (c, t) in layers.items()
        },
    )


def reply(backends: list[str], present: list[str] = (), jobs: list[PullProgress] = ()) -> ModelReply:  # type: ignore[assignment]
    return ModelReply(source=SOURCE, backends=backends, present=list(present), jobs=list(jobs))


def test_present_everywhere_succeeds_at_once() -> None:
    stream = PullStream("llama3.2")
    lines = stream.begin(reply(["a", "b"], present=["a", "b"]))
    assert lines == [{"status": "pulling manifest"}, *FINAL_STEPS]
    assert stream.finished and stream.last == {"status": "success"}


def test_a_layer_shows_its_size_and_the_average_progress_of_the_backends_pulling_it() -> None:
    stream = PullStream("llama3.2")
    assert stream.begin(reply(["a", "b", "c"], present=["c"])) == [{"status": "pulling manifest"}]
    assert stream.pending == {"a", "b"}
    assert stream.update(progress("a", 1, big=(10, 100))) == [
        {"status": "pulling aaaaaaaaaaaa", "digest": BIG, "total": 100, "completed": 5}
    ]
    assert stream.update(progress("b", 2, big=(0, 100))) == []  # b starting changes nothing shown
    assert stream.update(progress("a", 3, big=(100, 100), small=(6, 6))) == [
        {"status": "pulling aaaaaaaaaaaa", "digest": BIG, "total": 100, "completed": 50},
        {"status": "pulling bbbbbbbbbbbb", "digest": SMALL, "total": 6, "completed": 3},
    ]
    assert stream.update(progress("a", 4, "done", big=(100, 100), small=(6, 6))) == []
    assert not stream.finished and stream.pending == {"b"}
    assert stream.update(progress("b", 5, big=(40, 100))) == [
        {"status": "pulling aaaaaaaaaaaa", "digest": BIG, "total": 100, "completed": 70}
    ]
    lines = stream.update(progress("b", 6, "done", big=(100, 100), small=(6, 6)))
    assert lines == [
        {"status": "pulling aaaaaaaaaaaa", "digest": BIG, "total": 100, "completed": 100},
        {"status": "pulling bbbbbbbbbbbb", "digest": SMALL, "total": 6, "completed": 6},
        *FINAL_STEPS,
    ]
    assert stream.finished and stream.update(progress("b", 7, "done")) == []


def test_a_finished_backend_counts_whole_even_without_layer_counts() -> None:
    stream = PullStream("llama3.2")
    stream.begin(reply(["a", "b"]))
    stream.update(progress("b", 1, big=(50, 100)))
    assert stream.update(progress("a", 2, "done")) == [
        {"status": "pulling aaaaaaaaaaaa", "digest": BIG, "total": 100, "completed": 75}
    ]


def test_zero_counts_are_left_out_like_ollama_does() -> None:
    stream = PullStream("llama3.2")
    stream.begin(reply(["a"]))
    assert stream.update(progress("a", 1, big=(0, 0))) == [{"status": "pulling aaaaaaaaaaaa", "digest": BIG}]


def test_jobs_in_the_reply_count_and_older_or_foreign_updates_are_ignored() -> None:
    stream = PullStream("llama3.2")
    lines = stream.begin(reply(["a", "b"], jobs=[progress("a", 7, "done", big=(9, 9))]))
    assert lines[-1] == {"status": "pulling aaaaaaaaaaaa", "digest": BIG, "total": 9, "completed": 4}
    assert stream.pending == {"b"}
    assert stream.update(progress("a", 3, "failed")) == []  # older than the reply's state
    other_replica = PullProgress(source="cp2", seq=99, backend="b", model="llama3.2", state="failed")
    assert stream.update(other_replica) == []
    other_model = PullProgress(source=SOURCE, seq=99, backend="b", model="qwen3", state="failed")
    assert stream.update(other_model) == []
    not_ours = PullProgress(source=SOURCE, seq=99, backend="z", model="llama3.2", state="failed")
    assert stream.update(not_ours) == []
    same_model = PullProgress(source=SOURCE, seq=10, backend="b", model="LLaMA3.2:latest", state="done")
    assert stream.update(same_model)[-1] == {"status": "success"}


def test_a_failed_attempt_ends_the_pull_with_the_backends_message() -> None:
    stream = PullStream("nope")
    stream.begin(reply(["a", "b"]))
    failed = PullProgress(
        source=SOURCE, seq=1, backend="a", model="nope", state="retrying", error="file does not exist"
    )
    assert stream.update(failed) == [{"error": "pulling nope onto backend a failed: file does not exist"}]
    assert stream.finished and stream.last["error"].endswith("file does not exist")
    assert stream.update(progress("b", 2, "done")) == []


def test_fail_ends_it_once() -> None:
    stream = PullStream("llama3.2")
    stream.begin(reply(["a"]))
    assert stream.fail("no news") == [{"error": "no news"}]
    assert stream.fail("again") == []
