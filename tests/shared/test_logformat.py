"""Log lines in text and JSON: stable fields, the access log's fields, and redaction in both."""

from __future__ import annotations

import json
import logging

import pytest

from shared.errors import ConfigError
from shared.logformat import PREFORMATTED, JsonFormatter, TextFormatter, configure_logging, syslog_address
from shared.logs import RedactSecrets


def _record(message: str, *args: object, fields: dict[str, object] | None = None) -> logging.LogRecord:
    record = logging.LogRecord("ollamaflow.test", logging.WARNING, __file__, 1, message, args, None)
    if fields is not None:
        record.fields = fields
    return record


def test_json_lines_have_stable_fields_and_carry_the_records_fields() -> None:
    record = _record("served %s", "x", fields={"status": 200, "model": "llama3.2", "ttfb_ms": None})
    entry = json.loads(JsonFormatter().format(record))
    assert list(entry)[:4] == ["time", "level", "logger", "message"]
    assert entry["time"].endswith("Z") and entry["level"] == "WARNING"
    assert (entry["message"], entry["status"], entry["model"], entry["ttfb_ms"]) == (
        "served x",
        200,
        "llama3.2",
        None,
    )


def test_text_lines_show_fields_as_key_value() -> None:
    line = TextFormatter().format(_record("served", fields={"status": 200, "model": "a b", "none": None}))
    assert line.endswith('WARNING ollamaflow.test: served status=200 model="a b" none=-')


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()])
def test_preformatted_batches_pass_as_they_are(formatter: logging.Formatter) -> None:
    record = _record('{"a":1}\n{"a":2}')
    setattr(record, PREFORMATTED, True)
    assert formatter.format(record) == '{"a":1}\n{"a":2}'


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()])
def test_redaction_holds_in_both_formats(formatter: logging.Formatter) -> None:
    record = _record("calling %s", "http://h/api?api_key=sekrit with Authorization: Bearer tok123")
    assert RedactSecrets().filter(record)
    line = formatter.format(record)
    assert "sekrit" not in line and "tok123" not in line and "REDACTED" in line


def test_exceptions_are_one_json_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line and "ValueError: boom" in json.loads(line)["exception"]


def test_syslog_addresses() -> None:
    assert syslog_address("logs.example:514") == ("logs.example", 514)
    assert syslog_address("[::1]:514") == ("::1", 514)
    assert syslog_address("/dev/log") == "/dev/log"
    for bad in ("nohost", "h:0", "h:x"):
        with pytest.raises(ValueError):
            syslog_address(bad)


def test_configure_logging_sends_lines_to_syslog_too() -> None:
    import socket

    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(5)
    root = logging.getLogger()
    before = list(root.handlers), root.level
    try:
        configure_logging("INFO", "json", f"127.0.0.1:{receiver.getsockname()[1]}")
        logging.getLogger("ollamaflow.test").info("to syslog with token=abc", extra={"fields": {"k": 1}})
        data = receiver.recv(65536).decode()
        # A preformatted batch (the access log's) goes out one datagram per line.
        logging.getLogger("ollamaflow.access").info('{"n":1}\n{"n":2}', extra={PREFORMATTED: True})
        batch = [receiver.recv(65536).decode() for _ in range(2)]
    finally:
        for handler in list(root.handlers):
            if handler not in before[0]:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(before[1])
        receiver.close()
    # <priority>ident then the JSON object; the query-shaped secret is not there.
    priority, _, rest = data.partition(">")
    assert priority == "<14" and rest.startswith("ollamaflow: ")
    entry = json.loads(rest[len("ollamaflow: ") :].rstrip("\x00"))
    assert entry["k"] == 1 and entry["message"].startswith("to syslog")
    assert [line.rstrip("\x00") for line in batch] == ['<14>ollamaflow: {"n":1}', '<14>ollamaflow: {"n":2}']


def test_an_unknown_format_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="LOG_FORMAT"):
        configure_logging("INFO", "xml")
