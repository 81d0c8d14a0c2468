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
from typing import TYPE_CHECKING, Any

from dataplane.responses import Send

if TYPE_CHECKING:
    from dataplane.call import Call
    from dataplane.disconnect import DisconnectGuard
    from dataplane.tracing import RequestTrace

__all__ = ["Meter", "token_counts"]

# Only the end of an answer is searched: the counts come last, and a large body costs nothing more.
_TAIL = 4096
_DIGITS = re.compile(rb"\s*(\d{1,12})")


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
        self.trace: RequestTrace | None = None  # its spans, when traces are on (dataplane.tracing)

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


def token_counts(last: bytes, previous: bytes = b"") -> tuple[int, int]:
    """(input, output) tokens an answer's final chunks report; 0 for what they do not say.

    Ollama's final object has ``prompt_eval_count`` and ``eval_count``; OpenAI's ``usage`` has
    ``prompt_tokens`` and ``completion_tokens`` (in a stream, in the chunk before ``[DONE]``). A JSON
    string cannot hold an unescaped quote, so text a model wrote never matches. ``rfind`` rather than
    a regular expression: it runs for every answer, and costs a tenth as much.
    """
    for chunk in (last, previous):
        if not chunk:
            continue
        tail = bytes(chunk[-_TAIL:])
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
    return 0, 0


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
