"""What one proxied request came to, read once it ended: for the metrics, the access log and traces.

An accepted request is its ``Call``: who served it, how, its retries and queue wait, and, on its
``DisconnectGuard`` (a ``Sent``), what went to the client, noted by what sends the answer. A request
answered before it was accepted (a bad body, an unknown model, no frontend for its host) is an
``EarlyAnswer``, which notes what goes out through it. Both are ``Ended``. ``token_counts`` reads an
answer's token counts from its last two chunks.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, ClassVar, Protocol

import msgspec

from dataplane.http.responses import Send
from dataplane.http.sent import Sent

if TYPE_CHECKING:
    from dataplane.observe.tracing import RequestTrace
    from dataplane.proxy.call import Endpoint
    from dataplane.routing.table import Target

__all__ = ["EarlyAnswer", "Ended", "answer_tokens", "token_counts"]

# Only the end of an answer is searched: the counts come last, and a large body costs nothing more.
_TAIL = 4096
_DIGITS = re.compile(rb"\s*(\d{1,12})")
_DONE = b"data: [DONE]\n\n"  # an OpenAI stream's last chunk: nothing to read
# A count the search could read too: at most 12 digits, never negative.
_Count = Annotated[int, msgspec.Meta(ge=0, le=999_999_999_999)]


class Ended(Protocol):
    """A proxied request that ended, as the metrics, the access log and traces read it."""

    ended_at: float  # perf_counter() when it ended, set as it is observed
    tokens: tuple[int, int] | None  # its (input, output) token counts, once read (answer_tokens)

    @property
    def endpoint(self) -> Endpoint: ...
    @property
    def started(self) -> float: ...  # perf_counter() when it arrived
    @property
    def request_id(self) -> str: ...
    @property
    def frontend_id(self) -> str: ...  # "" if no frontend took it
    @property
    def model(self) -> str: ...  # "" if it named none that could be read
    @property
    def guard(self) -> Sent: ...  # what went to the client
    @property
    def served(self) -> Target | None: ...  # the backend of the answer (or of the last attempt)
    @property
    def relay(self) -> str: ...  # "passthrough", "translated", "local"; "" if no backend answered
    @property
    def queued(self) -> float: ...  # seconds it waited in a queue; -1 if it never did
    @property
    def tried(self) -> tuple[Target, ...]: ...  # the backends that failed before the answer
    @property
    def rejected(self) -> bool: ...  # a full queue or an expired wait turned it away
    @property
    def trace(self) -> RequestTrace | None: ...  # its spans, when traces are on


class EarlyAnswer:
    """A request answered before it was accepted: ``noted`` is its client's ``send``, noting what
    goes out on ``guard``."""

    __slots__ = (
        "ended_at",
        "endpoint",
        "frontend_id",
        "guard",
        "model",
        "noted",
        "request_id",
        "send",
        "started",
        "tokens",
        "trace",
    )

    served: ClassVar[None] = None
    relay: ClassVar[str] = ""
    queued: ClassVar[float] = -1.0
    tried: ClassVar[tuple[()]] = ()
    rejected: ClassVar[bool] = False

    def __init__(
        self,
        send: Send,
        endpoint: Endpoint,
        started: float,
        request_id: str,
        frontend_id: str,
        model: str,
        trace: RequestTrace | None,
    ) -> None:
        self.send = send
        self.endpoint = endpoint
        self.started = started
        self.ended_at = 0.0
        self.tokens: tuple[int, int] | None = None
        self.request_id = request_id
        self.frontend_id = frontend_id
        self.model = model
        self.trace = trace
        self.guard = Sent()
        self.noted = self.guard.noting(send)  # what the answer is written to


def answer_tokens(ended: Ended) -> tuple[int, int]:
    """The (input, output) token counts of a successful answer a backend gave; none for the rest."""
    sent = ended.guard
    if sent.status == 200 and ended.served is not None:
        return token_counts(sent.last, sent.previous)
    return 0, 0


# gc=False: one is decoded per answer and never takes part in a cycle, so the collector need not
# track it (each tracked allocation brings the next collection nearer).
class _Usage(msgspec.Struct, gc=False):
    prompt_tokens: _Count = 0
    completion_tokens: _Count = 0


class _Final(msgspec.Struct, gc=False):
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
