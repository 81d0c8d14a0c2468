"""The access log's lines, written in batches: one line per proxied request costs a few microseconds.

A log record per request costs tens of microseconds (record, filters, formatter, a write and a
flush each): more than the data plane's own work on a small request. So each line is formatted here
(text or JSON, as ``OLLAMAFLOW_LOG_FORMAT`` says), kept, and handed to the ``ollamaflow.access``
logger as one record per batch, at most ``FLUSH_AFTER`` seconds or ``BATCH`` lines later. The
record says it is preformatted (``shared.logformat``): handlers write its lines as they are and the
syslog handler one datagram per line. The redaction filter passes these records by (its regular
expressions over a batch cost more than the rest of the line): the only field a client writes
freely, the model name, is redacted here, once per distinct name.
"""

from __future__ import annotations

import asyncio
import logging
import time

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
    """One access line's fields in their documented order (``dataplane.request_log``); a Struct, so
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
    """Formats access lines and hands them to the logger in batches (on the event loop only)."""

    def __init__(self, log_format: str = "text") -> None:
        self._json = log_format == "json"
        self._pending: list[str] = []
        self._timer: asyncio.TimerHandle | None = None
        self._second = -1
        self._stamp = ""
        self._models: dict[str, str] = {}
        self._shown: dict[str, str] = {}  # ids and paths as a text line shows them

    @property
    def enabled(self) -> bool:
        return logger.isEnabledFor(logging.INFO)

    def _time(self, now: float) -> str:
        second = int(now)
        if second != self._second:  # formatted once a second; the milliseconds are added per line
            self._second = second
            if self._json:
                self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            else:
                self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        millis = int((now - second) * 1000)
        return f"{self._stamp}.{millis:03d}Z" if self._json else f"{self._stamp},{millis:03d}"

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
        """One line (its ``time`` is set here)."""
        stamp = self._time(time.time())
        if self._json:
            entry.time = stamp
            line = _encoder.encode(entry).decode()
        else:
            shown = self._show
            line = (
                f"{stamp} INFO ollamaflow.access: {entry.message} request_id={entry.request_id or '-'} "
                f"frontend={shown(entry.frontend)} backend={shown(entry.backend)} "
                f"model={shown(entry.model)} endpoint={shown(entry.endpoint)} "
                f"client_format={entry.client_format} status={entry.status} bytes={entry.bytes} "
                f"duration_ms={entry.duration_ms} ttfb_ms={_number(entry.ttfb_ms)} "
                f"input_tokens={_number(entry.input_tokens)} output_tokens={_number(entry.output_tokens)} "
                f"retries={entry.retries} queue_ms={_number(entry.queue_ms)} relay={entry.relay} "
                f"client_gone={entry.client_gone}"
            )
        pending = self._pending
        pending.append(line)
        if len(pending) >= BATCH:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_AFTER, self.flush)

    def flush(self) -> None:
        """Hand the pending lines to the logger now (also at the data plane's stop)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending:
            lines, self._pending = self._pending, []
            logger.info("\n".join(lines), extra={PREFORMATTED: True})

    def _show(self, value: str) -> str:
        """``value`` as a text line shows it: in JSON quotes if it holds a space, a quote, ``=`` or a
        line break (remembered: ids, paths and models repeat)."""
        shown = self._shown.get(value)
        if shown is None:
            shown = _quoted(value)
            if len(self._shown) < _REDACTED_MODELS:
                self._shown[value] = shown
        return shown


def _quoted(value: str) -> str:
    if not value or " " in value or '"' in value or "=" in value or "\n" in value:
        return _encoder.encode(value).decode()
    return value


def _number(value: float | None) -> str:
    return "-" if value is None else str(value)


def millis(seconds: float) -> float:
    """``seconds`` in milliseconds with three decimals (cut, not rounded: ``round`` costs 0.5 µs)."""
    return int(seconds * 1_000_000) / 1000
