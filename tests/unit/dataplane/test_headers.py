"""Which headers cross the proxy, and the NDJSON error line."""

from __future__ import annotations

import json

from dataplane.http.headers import read_client_headers, response_headers
from dataplane.http.stream_framing import ndjson_error_line


def test_client_headers_are_split_and_filtered() -> None:
    raw = [
        (b"host", b"chat.example.com:43411"),
        (b"content-length", b"42"),
        (b"content-type", b"application/json"),
        (b"authorization", b"Bearer client-secret"),
        (b"connection", b"keep-alive, X-Private"),
        (b"x-private", b"hop"),
        (b"keep-alive", b"timeout=5"),
        (b"transfer-encoding", b"chunked"),
        (b"x-forwarded-for", b"1.1.1.1"),
        (b"x-forwarded-for", b"2.2.2.2"),
        (b"x-ollamaflow-request", b"forged"),
        (b"user-agent", b"ollama-python/0.4"),
    ]
    got = read_client_headers(raw)
    assert got.host == "chat.example.com:43411"
    assert got.content_length == 42
    assert got.forwarded_for == b"1.1.1.1, 2.2.2.2"
    assert got.forward == [(b"content-type", b"application/json"), (b"user-agent", b"ollama-python/0.4")]


def test_the_label_header_is_read_and_not_forwarded() -> None:
    got = read_client_headers([(b"x-ollamaflow-label", b" GPU "), (b"accept", b"*/*")])
    assert got.label == "GPU"
    assert got.forward == [(b"accept", b"*/*")]
    assert read_client_headers([]).label == ""


def test_the_explain_header_is_read_and_not_forwarded() -> None:
    asked = read_client_headers([(b"x-ollamaflow-explain", b"1"), (b"accept", b"*/*")])
    assert asked.explain and asked.forward == [(b"accept", b"*/*")]
    assert read_client_headers([(b"x-ollamaflow-explain", b" TRUE ")]).explain
    assert not read_client_headers([(b"x-ollamaflow-explain", b"0")]).explain
    assert not read_client_headers([(b"accept", b"*/*")]).explain


def test_bad_content_length_is_ignored() -> None:
    assert read_client_headers([(b"content-length", b"x")]).content_length is None


def test_response_headers_drop_hop_by_hop_and_add_ours() -> None:
    raw = [
        (b"Content-Type", b"application/x-ndjson"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Connection", b"close"),
        (b"Date", b"Mon, 01 Jan 2024 00:00:00 GMT"),
        (b"X-Backend-Thing", b"1"),
    ]
    extra = [(b"x-ollamaflow-backend", b"b1")]
    assert response_headers(raw, extra) == [
        (b"content-type", b"application/x-ndjson"),
        (b"x-backend-thing", b"1"),
        (b"x-ollamaflow-backend", b"b1"),
    ]


def test_ndjson_error_line_starts_on_its_own_line() -> None:
    line = ndjson_error_line('backend "b" broke', after=b'{"done":false}\n')
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == {"error": 'backend "b" broke'}
    after_partial = ndjson_error_line("x", after=b'{"do')
    assert after_partial.startswith(b"\n")
    assert json.loads(after_partial.splitlines()[1]) == {"error": "x"}
