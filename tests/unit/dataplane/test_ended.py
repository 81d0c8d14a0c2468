"""Token counts read from the end of answers (dataplane.observe.ended), and the client request ids taken."""

from __future__ import annotations

import pytest

from dataplane.http.headers import read_client_headers, request_id_of
from dataplane.observe.ended import token_counts


def test_ollama_final_objects_give_prompt_and_eval_counts() -> None:
    last = b'{"model":"m","done":true,"prompt_eval_count":26,"eval_count":290,"eval_duration":1}\n'
    assert token_counts(last) == (26, 290)


def test_openai_usage_is_found_in_the_chunk_before_done() -> None:
    usage = b'data: {"choices":[],"usage": {"prompt_tokens": 12, "completion_tokens": 7}}\n\n'
    assert token_counts(b"data: [DONE]\n\n", usage) == (12, 7)


def test_text_a_model_wrote_never_counts() -> None:
    chunk = b'{"message":{"content":"say \\"eval_count\\":99"},"done":false}\n'
    assert token_counts(chunk) == (0, 0)


def test_only_the_tail_of_a_large_answer_is_searched() -> None:
    assert token_counts(b'{"eval_count":5,' + b" " * 10_000 + b"}") == (0, 0)


@pytest.mark.parametrize(
    ("value", "taken"),
    [
        (b"abc-123", "abc-123"),
        (b" a.b:c/d+e=f@g~h_i ", "a.b:c/d+e=f@g~h_i"),
        (b"x" * 128, "x" * 128),
        (b"x" * 129, ""),
        (b"a b", ""),
        (b"", ""),
        (b"\xff", ""),
        (b"a;b", ""),
    ],
)
def test_request_ids_are_bounded_in_length_and_charset(value: bytes, taken: str) -> None:
    assert request_id_of(value) == taken


def test_traceparent_names_the_request_unless_x_request_id_does() -> None:
    parent = (b"traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    assert read_client_headers([parent]).request_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert read_client_headers([parent, (b"x-request-id", b"mine")]).request_id == "mine"
    assert read_client_headers([(b"x-request-id", b"mine"), parent]).request_id == "mine"
    zero = (b"traceparent", b"00-" + b"0" * 32 + b"-00f067aa0ba902b7-01")
    assert read_client_headers([zero]).request_id == ""
    bad = read_client_headers([(b"x-request-id", b"no good")])
    assert bad.request_id == "" and bad.forward == []
