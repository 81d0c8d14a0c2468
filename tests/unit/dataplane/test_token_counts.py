"""Token counts are decoded from an answer's final document into a small Struct; these prove they are
what a full decode of that document gives, and what searching the chunk's tail for the keys gave
before, for any answer in the shapes backends send (Ollama lines, OpenAI bodies and SSE chunks)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from dataplane.observe.ended import _searched, token_counts

_counts = st.one_of(st.integers(0, 9), st.integers(0, 999_999_999_999))
_texts = st.text(max_size=200)
_keys = ["model", "created_at", "done_reason", "total_duration", "id", "object", "system_fingerprint"]
_extra = st.dictionaries(
    st.sampled_from(_keys),
    st.one_of(_texts, st.integers(0, 2**53), st.none(), st.booleans()),
    max_size=4,
)


@st.composite
def _ollama_final(draw: st.DrawFn) -> dict[str, Any]:
    final = dict(draw(_extra))
    final["message"] = {"role": "assistant", "content": draw(_texts)}
    final["done"] = True
    for key in ("prompt_eval_count", "eval_count", "eval_duration"):
        if draw(st.booleans()):
            final[key] = draw(_counts)
    return _shuffled(draw, final)


@st.composite
def _openai_final(draw: st.DrawFn) -> dict[str, Any]:
    final = dict(draw(_extra))
    final["choices"] = draw(st.sampled_from([[], [{"index": 0, "delta": {"content": draw(_texts)}}]]))
    usage = draw(
        st.one_of(
            st.none(),
            st.fixed_dictionaries(
                {}, optional={"prompt_tokens": _counts, "completion_tokens": _counts, "total_tokens": _counts}
            ),
        )
    )
    if usage is not None or draw(st.booleans()):
        final["usage"] = usage
    return _shuffled(draw, final)


def _shuffled(draw: st.DrawFn, document: dict[str, Any]) -> dict[str, Any]:
    keys = draw(st.permutations(list(document)))
    return {key: document[key] for key in keys}


def _dumped(draw: st.DrawFn, document: dict[str, Any]) -> bytes:
    separators = draw(st.sampled_from([(",", ":"), (", ", ": ")]))
    return json.dumps(document, separators=separators, ensure_ascii=draw(st.booleans())).encode()


def _decoded(final: dict[str, Any]) -> tuple[int, int]:
    """The counts a full decode of the final document gives (0, 0: none)."""
    if final.get("eval_count"):
        return final.get("prompt_eval_count", 0), final["eval_count"]
    usage = final.get("usage") or {}
    if usage.get("prompt_tokens") or usage.get("completion_tokens"):
        return usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    return final.get("prompt_eval_count", 0), 0


def _searched_counts(last: bytes, previous: bytes) -> tuple[int, int]:
    """The counts searching each chunk's tail for the keys gives (as before the decode)."""
    for chunk in (last, previous):
        counts = _searched(chunk) if chunk else None
        if counts is not None:
            return counts
    return 0, 0


@given(data=st.data(), final=_ollama_final(), streamed=st.booleans(), lines_before=st.integers(0, 3))
def test_an_ollama_answer_counts_as_its_final_object_decoded(
    data: st.DataObject, final: dict[str, Any], streamed: bool, lines_before: int
) -> None:
    line = _dumped(data.draw, final) + (b"\n" if streamed or data.draw(st.booleans()) else b"")
    before = b"".join(
        _dumped(data.draw, {"message": {"content": data.draw(_texts)}, "done": False}) + b"\n"
        for _ in range(lines_before)
    )
    last = before + line  # lines can come in one chunk
    previous = b'{"message":{"content":"x"},"done":false}\n' if streamed else b""
    assert token_counts(last, previous) == _decoded(final)
    assert token_counts(last, previous) == _searched_counts(last, previous)


@given(data=st.data(), final=_openai_final(), sse=st.booleans(), done_apart=st.booleans())
def test_an_openai_answer_counts_as_its_usage_decoded(
    data: st.DataObject, final: dict[str, Any], sse: bool, done_apart: bool
) -> None:
    document = _dumped(data.draw, final)
    if not sse:
        last, previous = document, b""
    elif done_apart:
        last, previous = b"data: [DONE]\n\n", b"data: " + document + b"\n\n"
    else:
        last, previous = b'data: {"choices":[]}\n\ndata: ' + document + b"\n\ndata: [DONE]\n\n", b""
    assert token_counts(last, previous) == _decoded(final)
    assert token_counts(last, previous) == _searched_counts(last, previous)


@given(text=st.text(), count=_counts)
def test_text_a_model_wrote_never_counts(text: str, count: int) -> None:
    written = json.dumps({"eval_count": count, "usage": {"prompt_tokens": count}})
    line = json.dumps({"message": {"content": text + written + "\ndata: {}"}, "done": False}).encode()
    assert token_counts(line + b"\n") == (0, 0)
    assert token_counts(b"data: " + line + b"\n\n") == (0, 0)


def test_counts_that_do_not_decode_are_searched_for() -> None:
    assert token_counts(b'{"done":true,"eval_count":7,"prompt_eval_count":2.5}') == (2, 7)
    assert token_counts(b'{"done":true,"eval_count":-3,"prompt_eval_count":4}') == (4, 0)
    assert token_counts(b'{"done":true,"eval_count":9,"prompt_eval_count":4') == (4, 9)  # cut short


def test_a_final_line_longer_than_the_tail_is_searched() -> None:
    content = "x" * 5000
    final = {"message": {"content": content}, "done": True, "prompt_eval_count": 3, "eval_count": 8}
    line = json.dumps(final)
    assert token_counts(line.encode() + b"\n") == (3, 8)
