"""Stream framing: the bytes that delimit messages in a streamed answer.

Pure. Ollama streams NDJSON: one compact JSON object per line, each ended by a single ``\\n``, no blank
lines. The SSE side (and incremental decoders for translation) belong here too when they arrive.
"""

from __future__ import annotations

from shared.wire import openai
from shared.wire.ollama import error_body

__all__ = ["ndjson_error_line", "sse_error_event"]


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
