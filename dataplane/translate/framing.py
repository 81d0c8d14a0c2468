"""Incremental stream framing for translation: NDJSON and SSE decoders and encoders (sans-IO).

A decoder takes network chunks as they come (``feed``), keeps partial lines across chunks, and returns
whole messages; ``close`` ends the stream. Encoders turn one JSON value into the bytes of one message.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec

__all__ = [
    "SSE_DONE",
    "NdjsonDecoder",
    "SseDecoder",
    "SseEvent",
    "encode_json",
    "ndjson_line",
    "sse_event",
]

SSE_DONE = b"data: [DONE]\n\n"

_json_encoder = msgspec.json.Encoder()

# httpx's iter_lines splits on these as str.splitlines does, so they never go out raw in NDJSON.
_LINE_BREAKING = ((b"\xe2\x80\xa8", b"\\u2028"), (b"\xe2\x80\xa9", b"\\u2029"), (b"\xc2\x85", b"\\u0085"))


def encode_json(value: Any) -> bytes:
    """Compact JSON; U+2028, U+2029 and U+0085 escaped (they occur only inside strings)."""
    data = _json_encoder.encode(value)
    for raw, escaped in _LINE_BREAKING:
        if raw in data:
            data = data.replace(raw, escaped)
    return data


def ndjson_line(value: Any) -> bytes:
    """One NDJSON message: compact JSON and a single ``\\n``."""
    return encode_json(value) + b"\n"


def sse_event(value: Any) -> bytes:
    """One SSE message carrying ``value`` as JSON: ``data: {...}\\n\\n``."""
    return b"data: " + encode_json(value) + b"\n\n"


class NdjsonDecoder:
    """Splits a byte stream into NDJSON lines; blank lines are dropped, a trailing ``\\r`` is stripped."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        data = self._pending + chunk
        *lines, self._pending = data.split(b"\n")
        return [line for line in (raw.rstrip(b"\r") for raw in lines) if line.strip()]

    def close(self) -> list[bytes]:
        """The last line if the stream ended without a newline."""
        rest, self._pending = self._pending.rstrip(b"\r"), b""
        return [rest] if rest.strip() else []


class SseEvent(NamedTuple):
    """One dispatched SSE event: its ``data`` lines joined with ``\\n``."""

    data: str
    event: str = "message"


class SseDecoder:
    """Server-sent events as the HTML standard (and openai-python) read them.

    Lines end with CR, LF or CRLF (a CR at the end of one chunk and LF at the start of the next are one
    line end); ``:`` lines are comments; one space after the field colon is optional; several ``data``
    lines join with ``\\n``; a blank line dispatches. An event without its blank line is never dispatched.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._skip_lf = False
        self._data: list[str] = []  # the event being read: its data lines and its name
        self._name = ""

    def feed(self, chunk: bytes) -> list[SseEvent]:
        if not self._skip_lf and b"\r" not in chunk:
            return self._feed_lf(chunk)
        events: list[SseEvent] = []
        pos, size = 0, len(chunk)
        if self._skip_lf and chunk[:1] == b"\n":
            pos = 1
        self._skip_lf = False
        while pos < size:
            ends = [found for found in (chunk.find(b"\r", pos), chunk.find(b"\n", pos)) if found >= 0]
            if not ends:
                break
            end = min(ends)
            self._buffer += chunk[pos:end]
            pos = end + 1
            if chunk[end] == 0x0D:
                if pos == size:
                    self._skip_lf = True
                elif chunk[pos] == 0x0A:
                    pos += 1
            event = self._line(bytes(self._buffer).decode("utf-8", errors="replace"))
            self._buffer.clear()
            if event is not None:
                events.append(event)
        self._buffer += chunk[pos:]
        return events

    def _feed_lf(self, chunk: bytes) -> list[SseEvent]:
        # What every server we know sends: lines end with LF only. One split instead of a search per
        # line end, and ``data:`` lines (nearly all of them) recognised without the general parse.
        events: list[SseEvent] = []
        lines = chunk.split(b"\n")
        rest = lines.pop()
        if lines and self._buffer:
            lines[0] = bytes(self._buffer) + lines[0]
            self._buffer.clear()
        for raw in lines:
            if raw.startswith(b"data: "):
                self._data.append(raw[6:].decode("utf-8", errors="replace"))
            elif (event := self._line(raw.decode("utf-8", errors="replace"))) is not None:
                events.append(event)
        self._buffer += rest
        return events

    def close(self) -> list[SseEvent]:
        """Nothing: an unterminated event is dropped, as conforming readers do."""
        self._buffer.clear()
        self._data, self._name = [], ""
        return []

    def _line(self, line: str) -> SseEvent | None:
        if not line:
            data, name = self._data, self._name
            if not data:
                self._name = ""
                return None
            self._data, self._name = [], ""
            return SseEvent(data[0] if len(data) == 1 else "\n".join(data), name or "message")
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._name = value
        return None
