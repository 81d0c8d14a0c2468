"""The access log's lines, written in batches: one line per proxied request costs a few microseconds.

A log record per request costs tens of microseconds (record, filters, formatter, a write and a
flush each): more than the data plane's own work on a small request. So a request only keeps its
line's fields and time; at most ``FLUSH_AFTER`` seconds or ``BATCH`` lines later the batch is
formatted here (text or JSON, as ``OLLAMAFLOW_LOG_FORMAT`` says: JSON in one encode, text with the
label fields quoted once per combination) and handed to the ``ollamaflow.access`` logger as one
record. The record says it is preformatted (``shared.logformat``): handlers write its lines as they
are and the syslog handler one datagram per line. The redaction filter passes these records by (its
regular expressions over a batch cost more than the rest of the line): the only field a client
writes freely, the model name, is redacted here, once per distinct name.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import msgspec

from shared.logformat import PREFORMATTED
from shared.logs import redact

__all__ = ["BATCH", "FLUSH_AFTER", "LEVEL", "LOGGER", "AccessLine", "AccessLog", "millis"]

FLUSH_AFTER = 0.1
BATCH = 256
LEVEL = "INFO"
LOGGER = "ollamaflow.access"

logger = logging.getLogger("ollamaflow.access")
_encoder = msgspec.json.Encoder()
_REDACTED_MODELS = 1024  # model names whose redacted form is remembered


class AccessLine(msgspec.Struct):
    """One access line's fields in their documented order (``dataplane.observe.request_log``); a Struct, so
    that a JSON line is one encode and a text line one format, without a dict per request. Built
    with positional arguments: keywords made it ten times dearer (3 µs of a request's ~170)."""

    time: str  # set by ``AccessLog.write``
    level: str
    logger: str
    message: str
    request_id: str | None
    frontend: str
    backend: str
    model: str
    endpoint: str
    client_format: str
    status: int
    bytes: int
    duration_ms: float
    ttfb_ms: float | None
    input_tokens: int | None
    output_tokens: int | None
    retries: int
    queue_ms: float | None
    relay: str
    client_gone: bool


class AccessLog:
    """Keeps access lines and hands them to the logger in batches (on the event loop only). A line
    is formatted when its batch is: a request only notes its entry and the time."""

    def __init__(self, log_format: str = "text", clock: Callable[[], float] = time.time) -> None:
        self._json = log_format == "json"
        self._clock = clock
        self._pending: list[AccessLine] = []
        self._times: list[float] = []  # time.time() of each pending line
        self._timer: asyncio.TimerHandle | None = None
        self._second = -1
        self._stamp = ""
        self._models: dict[str, str] = {}
        # (frontend, backend, model, endpoint, client_format) -> those fields of a text line: the
        # label combinations repeat, and quoting them is most of a line's cost
        self._shown: dict[tuple[str, str, str, str, str], str] = {}

    @property
    def enabled(self) -> bool:
        return logger.isEnabledFor(logging.INFO)

    def model(self, name: str) -> str:
        """A client's model name as the line shows it: redacted like any log message (the batches
        skip the redaction filter: every other field is ours, or checked like the request id)."""
        shown = self._models.get(name)
        if shown is None:
            shown = redact(name)
            if len(self._models) < _REDACTED_MODELS:
                self._models[name] = shown
        return shown

    def write(self, entry: AccessLine) -> None:
        """One line (its ``time`` is set when its batch is formatted)."""
        pending = self._pending
        pending.append(entry)
        self._times.append(self._clock())
        if len(pending) >= BATCH:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_AFTER, self.flush)

    def flush(self) -> None:
        """Format the pending lines and hand them to the logger now (also at the data plane's stop)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending:
            entries, times = self._pending, self._times
            self._pending, self._times = [], []
            batch = self._json_lines(entries, times) if self._json else self._text_lines(entries, times)
            logger.info(batch, extra={PREFORMATTED: True})

    def _stamp_of(self, second: int) -> str:
        """The time's second as a line shows it (formatted once a second; lines add milliseconds)."""
        if second != self._second:
            self._second = second
            if self._json:
                self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            else:
                self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return self._stamp

    def _json_lines(self, entries: list[AccessLine], times: list[float]) -> str:
        stamp_of = self._stamp_of
        for entry, now in zip(entries, times, strict=True):
            second = int(now)
            entry.time = f"{stamp_of(second)}.{int((now - second) * 1000):03d}Z"
        return _encoder.encode_lines(entries)[:-1].decode()  # one encode for the batch

    def _text_lines(self, entries: list[AccessLine], times: list[float]) -> str:
        stamp_of = self._stamp_of
        shown = self._shown
        lines = []
        for entry, now in zip(entries, times, strict=True):
            second = int(now)
            key = (entry.frontend, entry.backend, entry.model, entry.endpoint, entry.client_format)
            labels = shown.get(key)
            if labels is None:
                labels = _labels(key)
                if len(shown) < _REDACTED_MODELS:
                    shown[key] = labels
            ttfb, queue = entry.ttfb_ms, entry.queue_ms
            tokens_in, tokens_out = entry.input_tokens, entry.output_tokens
            lines.append(
                f"{stamp_of(second)},{int((now - second) * 1000):03d} INFO ollamaflow.access: "
                f"{entry.message} request_id={entry.request_id or '-'} {labels} status={entry.status} "
                f"bytes={entry.bytes} duration_ms={entry.duration_ms} "
                f"ttfb_ms={'-' if ttfb is None else ttfb} "
                f"input_tokens={'-' if tokens_in is None else tokens_in} "
                f"output_tokens={'-' if tokens_out is None else tokens_out} "
                f"retries={entry.retries} queue_ms={'-' if queue is None else queue} relay={entry.relay} "
                f"client_gone={entry.client_gone}"
            )
        return "\n".join(lines)


def _labels(key: tuple[str, str, str, str, str]) -> str:
    frontend, backend, model, endpoint, client_format = key
    return (
        f"frontend={_quoted(frontend)} backend={_quoted(backend)} model={_quoted(model)} "
        f"endpoint={_quoted(endpoint)} client_format={client_format}"
    )


def _quoted(value: str) -> str:
    """``value`` as a text line shows it: in JSON quotes if it holds a space, a quote, ``=`` or a
    line break."""
    if not value or " " in value or '"' in value or "=" in value or "\n" in value:
        return _encoder.encode(value).decode()
    return value


def millis(seconds: float) -> float:
    """``seconds`` in milliseconds with three decimals (cut, not rounded: ``round`` costs 0.5 µs)."""
    return int(seconds * 1_000_000) / 1000
