"""How both planes write their logs: text or JSON lines, to stderr and optionally to syslog.

``OLLAMAFLOW_LOG_FORMAT=text`` (the default) keeps the familiar line
``2026-01-01 12:00:00,000 INFO ollamaflow.dataplane: message``; ``json`` writes one object per line
with stable field names: ``time`` (RFC 3339, UTC, milliseconds), ``level``, ``logger``, ``message``,
``exception`` when there is one, and the record's own ``fields`` (the access log's). A record carries
fields as ``extra={"fields": {...}}``; text lines show them as ``key=value`` after the message. A
record marked ``PREFORMATTED`` holds lines already formatted (the access log's batches).
``OLLAMAFLOW_LOG_SYSLOG`` adds a syslog handler (``host:port`` over UDP, or a Unix socket path such as
``/dev/log``) with the same format. Every handler gets the redaction filter (``shared.logs``), so a
credential never reaches any of them, in either format.
"""

from __future__ import annotations

import datetime
import logging
import logging.handlers
import socket
from collections.abc import Mapping
from typing import Any

import msgspec

from shared.errors import ConfigError
from shared.logs import RedactSecrets, install_redaction

__all__ = [
    "LOG_FORMATS",
    "PREFORMATTED",
    "JsonFormatter",
    "TextFormatter",
    "configure_logging",
    "syslog_address",
]

LOG_FORMATS = ("text", "json")
# A record whose message is lines already in the chosen format (the access log's batches): written
# as they are, by every formatter; the syslog handler sends one datagram per line.
PREFORMATTED = "ollamaflow_preformatted"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_encoder = msgspec.json.Encoder()


def _fields(record: logging.LogRecord) -> Mapping[str, Any] | None:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, Mapping) else None


class TextFormatter(logging.Formatter):
    """The usual text line, then the record's fields as ``key=value`` (values with spaces quoted)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, PREFORMATTED, False):
            return record.getMessage()
        line = super().format(record)
        fields = _fields(record)
        if fields:
            line += " " + " ".join(f"{key}={_text_value(value)}" for key, value in fields.items())
        return line


def _text_value(value: object) -> str:
    if value is None:
        return "-"
    text = str(value)
    if not text or any(c in text for c in ' "=\n'):
        return _encoder.encode(text).decode()
    return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, exception, then the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, PREFORMATTED, False):
            return record.getMessage()
        stamp = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        entry: dict[str, Any] = {
            "time": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        fields = _fields(record)
        if fields:
            for key, value in fields.items():
                entry.setdefault(key, value)
        return _encoder.encode(entry).decode()


class _Redact(RedactSecrets):
    """The redaction filter, passing by preformatted records: their producer redacted what a
    client wrote (the access log's model names); every other part is the data plane's own."""

    def filter(self, record: logging.LogRecord) -> bool:
        return True if getattr(record, PREFORMATTED, False) else super().filter(record)


class _SyslogLines(logging.handlers.SysLogHandler):
    """Syslog, one datagram per line of a preformatted record (a datagram is one message)."""

    def emit(self, record: logging.LogRecord) -> None:
        if not getattr(record, PREFORMATTED, False):
            super().emit(record)
            return
        for line in record.getMessage().split("\n"):
            super().emit(logging.makeLogRecord({**record.__dict__, "msg": line, "args": None}))


def syslog_address(value: str) -> str | tuple[str, int]:
    """``host:port`` (UDP) or an absolute Unix socket path; raises ValueError otherwise."""
    value = value.strip()
    if value.startswith("/"):
        return value
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("must be host:port (UDP) or the path of a Unix socket such as /dev/log")
    return host.strip("[]"), int(port)


def configure_logging(level: str, log_format: str = "text", syslog: str = "") -> None:
    """Set up the root logger: stderr in ``log_format``, plus syslog when ``syslog`` names an address.

    Replaces handlers a previous call installed, so it can run again (tests, restarts in-process).
    """
    if log_format not in LOG_FORMATS:
        choices = ", ".join(LOG_FORMATS)
        raise ConfigError(f"OLLAMAFLOW_LOG_FORMAT must be one of {choices}, got {log_format!r}")
    formatter: logging.Formatter = JsonFormatter() if log_format == "json" else TextFormatter()
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if syslog:
        try:
            address = syslog_address(syslog)
            handler = _SyslogLines(address=address, socktype=socket.SOCK_DGRAM)
        except (ValueError, OSError) as exc:
            raise ConfigError(f"OLLAMAFLOW_LOG_SYSLOG {syslog!r}: {exc}") from exc
        handler.ident = "ollamaflow: "
        handlers.append(handler)
    for handler in handlers:
        handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_ollamaflow", False):
            root.removeHandler(old)
            old.close()
    for handler in handlers:
        handler._ollamaflow = True  # type: ignore[attr-defined]
        handler.addFilter(_Redact())  # install_redaction below then sees it and adds no other
        root.addHandler(handler)
    root.setLevel(level.upper())
    install_redaction(root)
