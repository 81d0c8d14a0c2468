"""What one proxied request sent its client, noted on the way out, for the metrics and the access log.

``Meter`` wraps the client's ``send``: it notes the status, the bytes, the time of the first body byte
and the last two body chunks (where an answer's token counts are: Ollama's final object, an OpenAI
``usage``). Passed-through answers bypass it (``passed``: a wrapper costs about a microsecond per
chunk of a stream); their relay notes the same on the request's ``DisconnectGuard``. The proxy fills
in who served the request as it learns it. ``token_counts`` reads the counts from those chunks.
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from time import perf_counter
from typing import TYPE_CHECKING, Annotated, Any

import msgspec

from dataplane.http.responses import Send

if TYPE_CHECKING:
    from dataplane.http.disconnect import DisconnectGuard
    from dataplane.observe.tracing import RequestTrace
    from dataplane.proxy.call import Call

__all__ = ["Meter", "token_counts"]

# Only the end of an answer is searched: the counts come last, and a large body costs nothing more.
_TAIL = 4096
_DIGITS = re.compile(rb"\s*(\d{1,12})")
_DONE = b"data: [DONE]\n\n"  # an OpenAI stream's last chunk: nothing to read
# A count the search could read too: at most 12 digits, never negative.
_Count = Annotated[int, msgspec.Meta(ge=0, le=999_999_999_999)]


class Meter:
    """The client's ``send``, noting what goes through it (used on the event loop only)."""

    __slots__ = (
        "bytes",
        "call",
        "first_byte",
        "frontend",
        "last",
        "model",
        "previous",
        "rejected",
        "request_id",
        "send",
        "started",
        "status",
        "streamed",
        "trace",
    )

    def __init__(self, send: Send, started: float) -> None:
        self.send = send
        self.started = started  # perf_counter() when the request arrived
        self.status = 0  # 0: nothing was sent (the client left first)
        self.bytes = 0  # body bytes sent
        self.first_byte = 0.0  # perf_counter() of the first body byte; 0.0 if none
        self.last = b""
        self.previous = b""
        self.streamed = False  # more than one body chunk went out
        self.request_id = ""
        self.frontend = ""  # the frontend's id, once known
        self.model = ""
        self.call: Call | None = None  # once the request was accepted
        self.rejected = False  # a full queue or an expired wait turned it away
        self.trace: RequestTrace | None = None  # its spans, when traces are on (dataplane.observe.tracing)

    async def __call__(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.body":
            body = message.get("body", b"")
            if body:
                if self.first_byte:
                    self.streamed = True
                else:
                    self.first_byte = perf_counter()
                self.bytes += len(body)
                self.previous = self.last
                self.last = body
        elif message["type"] == "http.response.start":
            self.status = message["status"]
        await self.send(message)

    def passed(self, guard: DisconnectGuard) -> None:
        """Take in what a passed-through answer sent: it goes to ``send`` itself, not through the
        meter, since a wrapper costs about a microsecond per chunk of a stream; the relay notes on
        the request's guard what is needed instead."""
        if guard.status:
            self.status = guard.status
        if guard.sent:
            self.bytes += guard.sent
            self.first_byte = self.first_byte or guard.first_at
            self.last, self.previous = guard.last, guard.previous
            self.streamed = bool(guard.previous)


class _Usage(msgspec.Struct):
    prompt_tokens: _Count = 0
    completion_tokens: _Count = 0


class _Final(msgspec.Struct):
    """The fields of an answer's final object that hold its token counts; the rest are skipped."""

    prompt_eval_count: _Count = 0  # Ollama
    eval_count: _Count = 0
    usage: _Usage | None = None  # OpenAI


_final = msgspec.json.Decoder(_Final)


def token_counts(last: bytes, previous: bytes = b"") -> tuple[int, int]:
    """(input, output) tokens an answer's final chunks report; 0 for what they do not say.

    Ollama's final object has ``prompt_eval_count`` and ``eval_count``; OpenAI's ``usage`` has
    ``prompt_tokens`` and ``completion_tokens`` (in a stream, in the chunk before ``[DONE]``). The
    chunk's last JSON document (its last line, or its last SSE ``data:`` line) is decoded into a
    Struct of those fields alone: less than half the cost of searching for the keys. A document that
    does not decode, or is longer than ``_TAIL``, has its chunk's tail searched for the keys instead.
    """
    for chunk in (last, previous):
        if not chunk or chunk == _DONE:
            continue
        if type(chunk) is not bytes:
            chunk = bytes(chunk)
        document = _final_document(chunk)
        if document is not None:
            try:
                final = _final.decode(document)
            except msgspec.DecodeError:  # not JSON, or counts that are no count: search instead
                pass
            else:
                if final.eval_count:
                    return final.prompt_eval_count, final.eval_count
                usage = final.usage
                if usage is not None and (usage.prompt_tokens or usage.completion_tokens):
                    return usage.prompt_tokens, usage.completion_tokens
                if final.prompt_eval_count:  # embeddings: the prompt only
                    return final.prompt_eval_count, 0
                continue
        counts = _searched(chunk)
        if counts is not None:
            return counts
    return 0, 0


def _final_document(chunk: bytes) -> bytes | None:
    """The last JSON document of an NDJSON or JSON body's chunk (its last line), or of an SSE
    chunk (its last ``data: {`` line); None if there is none within its last ``_TAIL`` bytes. JSON
    text holds no raw line break, so each line break found is one between lines."""
    size = len(chunk)
    low = size - _TAIL if size > _TAIL else 0
    if chunk[:1] == b"{":
        at = chunk.rfind(b"\n", low, size - 1)  # a line break that ends the chunk ends its last line
        if at >= 0:
            return chunk[at + 1 :]
        return chunk if low == 0 else None
    if chunk[:6] == b"data: ":
        at = chunk.rfind(b"\ndata: {", low)
        if at >= 0:
            at += 7
        elif low == 0 and chunk[6:7] == b"{":
            at = 6
        else:
            return None
        end = chunk.find(b"\n", at)
        return chunk[at:end] if end >= 0 else chunk[at:]
    return None


def _searched(chunk: bytes) -> tuple[int, int] | None:
    """The counts found by searching the chunk's last ``_TAIL`` bytes for their keys; None if none.
    A JSON string cannot hold an unescaped quote, so text a model wrote never matches."""
    tail = chunk[-_TAIL:]
    output = _count_after(tail, b'"eval_count"')
    if output:
        return _count_after(tail, b'"prompt_eval_count"'), output
    output = _count_after(tail, b'"completion_tokens"')
    prompt = _count_after(tail, b'"prompt_tokens"')
    if output or prompt:
        return prompt, output
    prompt = _count_after(tail, b'"prompt_eval_count"')  # embeddings: the prompt only
    if prompt:
        return prompt, 0
    return None


def _count_after(tail: bytes, key: bytes) -> int:
    """The integer after the last ``key`` ``:`` in ``tail`` (spaces allowed), else 0."""
    at = tail.rfind(key)
    if at < 0:
        return 0
    rest = tail[at + len(key) : at + len(key) + 32].lstrip()
    if not rest.startswith(b":"):
        return 0
    digits = _DIGITS.match(rest, 1)
    return int(digits.group(1)) if digits else 0
