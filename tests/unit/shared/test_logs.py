"""No credential reaches a log line: query values, URL passwords, bearer/basic tokens, key headers."""

from __future__ import annotations

import io
import logging

import pytest

from shared.logs import KnownSecrets, RedactSecrets, install_redaction, redact


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        ('HTTP Request: GET http://10.0.0.5:11434/api/tags?api_key=s3cret "HTTP/1.1 200 OK"', "s3cret"),
        ("GET http://h:1/api/ps?a=1&token=s3cret", "s3cret"),
        ("connected to NATS at nats://cp:s3cret@127.0.0.1:4222", "s3cret"),
        ("headers {'Authorization': 'Bearer s3cret'}", "s3cret"),
        ("[(b'authorization', b'Basic s3cret==')]", "s3cret"),
        ('{"X-Api-Key": "s3cret"}', "s3cret"),
        ("x-api-key: s3cret", "s3cret"),
    ],
)
def test_credentials_are_replaced(line: str, secret: str) -> None:
    cleaned = redact(line)
    assert secret not in cleaned
    assert "REDACTED" in cleaned


def test_ordinary_text_is_left_alone() -> None:
    for line in ("backend gpu1 is healthy again", "model llama3.2:latest pulled onto 3 backends", "a=b"):
        assert redact(line) == line


def test_every_handler_of_the_root_logger_redacts_records_and_tracebacks() -> None:
    root = logging.getLogger("redaction-test-root")
    root.propagate = False
    out = io.StringIO()
    root.addHandler(logging.StreamHandler(out))
    install_redaction(root)
    install_redaction(root)  # idempotent: one filter per handler
    assert sum(isinstance(f, RedactSecrets) for f in root.handlers[0].filters) == 1
    child = logging.getLogger("redaction-test-root.httpx")
    child.warning("HTTP Request: %s %s", "GET", "http://b:1/x?api_key=s3cret")
    try:
        raise ValueError("cannot reach http://u:s3cret@b:1/?key=s3cret")
    except ValueError:
        child.exception("failed")
    text = out.getvalue()
    assert "s3cret" not in text
    assert "api_key=REDACTED" in text and "ValueError" in text and "Traceback" in text


def test_known_secret_values_are_cut_out_whatever_the_line_looks_like() -> None:
    """A custom header's value or a query value logged without its URL matches no pattern: the values
    the plane holds are replaced literally, in messages and tracebacks."""
    root = logging.getLogger("redaction-test-known")
    root.propagate = False
    out = io.StringIO()
    root.addHandler(logging.StreamHandler(out))
    known = KnownSecrets()
    install_redaction(root, known=known)
    known.replace(["team-s3cret-blue", "q-s3cret", "ab"])  # "ab": too short to redact safely, left alone
    root.warning("backend b1 headers {'X-Team': 'team-s3cret-blue'} querystring api_key=q-s3cret ab")
    try:
        raise RuntimeError("upstream said: bad key team-s3cret-blue")
    except RuntimeError:
        root.exception("failed")
    text = out.getvalue()
    assert "s3cret" not in text and "RuntimeError" in text
    assert "'X-Team': 'REDACTED'" in text and text.rstrip().count("ab") >= 1
    known.replace([])
    root.warning("team-s3cret-blue")  # no longer a secret of this process
    assert out.getvalue().rstrip().endswith("team-s3cret-blue")


def test_backend_urls_with_query_strings_are_redacted_on_failures() -> None:
    """How the planes log a failed call: the backend's query-string values never show."""
    for line in (
        "cannot connect to http://10.0.0.5:11434/api/chat?api_key=s3cret: Connection refused",
        "GET https://gpu1:443/v1/models?trace=1&api-version=s3cret failed: timeout",
        'HTTP Request: POST http://h:1/api/pull?key=s3cret&other=s3cret "HTTP/1.1 500"',
    ):
        assert "s3cret" not in redact(line)


def test_known_secrets_replace_whole_values_among_many() -> None:
    known = KnownSecrets()
    many = [f"s3cret-{i:05d}" for i in range(20_000)]
    known.replace([*many, "abcd", "abcdef"])
    assert known.redact("a s3cret-01234 b s3cret-19999c") == "a REDACTED b REDACTEDc"
    assert known.redact("abcdefg abcd abc") == "REDACTEDg REDACTED abc"  # the longer value wins
    assert known.redact("nothing here") == "nothing here"
