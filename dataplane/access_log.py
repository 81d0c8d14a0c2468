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
from typing import Any

import msgspec

from shared.logformat import PREFORMATTED
from shared.logs import redact

__all__ = ["BATCH", "FLUSH_AFTER", "AccessLog"]

FLUSH_AFTER = 0.1
BATCH = 256

logger = logging.getLogger("ollamaflow.access")
_encoder = msgspec.json.Encoder()
_REDACTED_MODELS = 1024  # model names whose redacted form is remembered


class AccessLog:
    """Formats access lines and hands them to the logger in batches (on the event loop only)."""

    def __init__(self, log_format: str = "text") -> None:
        self._json = log_format == "json"
        self._pending: list[str] = []
        self._timer: asyncio.TimerHandle | None = None
        self._second = -1
        self._stamp = ""
        self._models: dict[str, str] = {}

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

    def write(self, message: str, fields: dict[str, Any]) -> None:
        """One line: ``message`` and ``fields`` (stable names, see ``dataplane.request_log``)."""
        stamp = self._time(time.time())
        if self._json:
            entry = {"time": stamp, "level": "INFO", "logger": "ollamaflow.access", "message": message}
            entry.update(fields)
            line = _encoder.encode(entry).decode()
        else:
            pairs = " ".join(f"{key}={_text(value)}" for key, value in fields.items())
            line = f"{stamp} INFO ollamaflow.access: {message} {pairs}"
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


def _text(value: object) -> str:
    if value is None:
        return "-"
    if type(value) is not str:
        return str(value)  # numbers and booleans
    if not value or " " in value or '"' in value or "=" in value or "\n" in value:
        return _encoder.encode(value).decode()
    return value
