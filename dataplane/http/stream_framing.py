"""Stream framing: the bytes that delimit messages in a streamed answer.

Pure. Ollama streams NDJSON: one compact JSON object per line, each ended by a single ``\\n``, no blank
lines; OpenAI streams SSE events. A stream that must end early (its backend broke off, or the data
plane stops) ends with its format's own error (``error_tail``), never a faked end.
"""

from __future__ import annotations

from shared.wire import openai
from shared.wire.ollama import error_body

__all__ = [
    "NDJSON",
    "NOT_STARTED",
    "OTHER",
    "SSE",
    "error_tail",
    "framing_of",
    "ndjson_error_line",
    "sse_error_event",
]

# How an answer carries an error in-band, as far as ending it early is concerned.
NOT_STARTED, NDJSON, SSE, OTHER = 0, 1, 2, 3


def framing_of(content_type: bytes) -> int:
    """How a started answer with this Content-Type can carry an error in-band."""
    if b"ndjson" in content_type:
        return NDJSON
    if b"event-stream" in content_type:
        return SSE
    return OTHER


def error_tail(framing: int, message: str, *, after: bytes) -> bytes | None:
    """The bytes that end a started stream of ``framing`` with ``message`` as its format's error, after
    the chunk ``after``; None when the format cannot say it in-band (the answer must end short)."""
    if framing == NDJSON:
        return ndjson_error_line(message, after=after)
    if framing == SSE:
        return sse_error_event(message, after=after)
    return None


def ndjson_error_line(message: str, *, after: bytes) -> bytes:
    """Ollama's mid-stream error, ``{"error": ...}``, as a line of its own after the chunk ``after``.

    If ``after`` broke off mid-line, a newline ends that (unparseable) line first, so the error line
    itself still parses.
    """
    line = error_body(message) + b"\n"
    return line if not after or after.endswith(b"\n") else b"\n" + line


def sse_error_event(message: str, *, after: bytes) -> bytes:
    """OpenAI's mid-stream error as an SSE event of its own (openai-python raises ``APIError`` on it).

    A blank line first ends an event ``after`` left open, so the error event is never merged into it.
    """
    event = b"data: " + openai.error_body(message, 502) + b"\n\n"
    return event if not after or after.endswith(b"\n\n") else b"\n\n" + event
