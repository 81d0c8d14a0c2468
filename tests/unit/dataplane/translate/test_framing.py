"""NDJSON and SSE framing: decoders fed at awkward boundaries, encoders read back by the clients' readers."""

from __future__ import annotations

import json

import httpx
import pytest
from openai._streaming import SSEDecoder

from dataplane.translate.framing import (
    SSE_DONE,
    NdjsonDecoder,
    SseDecoder,
    encode_json,
    ndjson_line,
    sse_event,
)


def _split(data: bytes, step: int) -> list[bytes]:
    return [data[i : i + step] for i in range(0, len(data), step)]


@pytest.mark.parametrize("step", [1, 2, 3, 7, 1000])
def test_ndjson_lines_across_chunks_without_blanks(step: int) -> None:
    stream = b'{"a":1}\n\n{"b":"x\\ny"}\r\n  \n{"c":3}'
    decoder = NdjsonDecoder()
    lines = [line for part in _split(stream, step) for line in decoder.feed(part)] + decoder.close()
    assert lines == [b'{"a":1}', b'{"b":"x\\ny"}', b'{"c":3}']
    assert decoder.close() == []


def test_ndjson_close_without_rest_is_empty() -> None:
    decoder = NdjsonDecoder()
    assert decoder.feed(b'{"a":1}\n') == [b'{"a":1}']
    assert decoder.close() == []


SSE_STREAM = (
    b": keep-alive ping\r\n\r\n"
    b'data: {"n":1}\r\n\r\n'
    b'data:{"n":2}\n\n'
    b'event: error\rdata: {"error":\r\rdata: {"first":1,\ndata: "second":2}\n\n'
    b"id: 7\nretry: 10\ndata\n\n"
    b"data: [DONE]\n\n"
    b"data: never dispatched"
)


@pytest.mark.parametrize("step", [1, 2, 3, 5, 64, 10_000])
def test_sse_matches_openai_python_decoder(step: int) -> None:
    decoder = SseDecoder()
    ours = [event for part in _split(SSE_STREAM, step) for event in decoder.feed(part)] + decoder.close()
    theirs = list(SSEDecoder().iter_bytes(iter(_split(SSE_STREAM, step))))
    assert [(e.event, e.data) for e in ours] == [(e.event or "message", e.data) for e in theirs]
    expected = ['{"n":1}', '{"n":2}', '{"error":', '{"first":1,\n"second":2}', "", "[DONE]"]
    assert [e.data for e in ours] == expected
    assert ours[2].event == "error"


def test_sse_crlf_split_between_chunks_is_one_line_end() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\n") == []  # the LF belongs to the CR before it: no blank line yet
    assert [e.data for e in decoder.feed(b"\r\n")] == ["a"]


def test_ndjson_line_escapes_line_separators_for_httpx() -> None:
    text = "a\u2028b\u2029c\u0085d é ✓"
    line = ndjson_line({"response": text})
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    lines = list(httpx.Response(200, content=line).iter_lines())
    assert len(lines) == 1
    assert json.loads(lines[0]) == {"response": text}
    assert "é ✓".encode() in line  # only the line breakers are escaped


def test_sse_encoders() -> None:
    assert sse_event({"a": 1}) == b'data: {"a":1}\n\n'
    assert SSE_DONE == b"data: [DONE]\n\n"
    assert encode_json({"x": None}) == b'{"x":null}'
