"""The admin API's write-only secrets as plain functions: what a read shows, what a write keeps."""

from __future__ import annotations

from controlplane.admin.secrets import (
    REDACTED,
    carries_new_secret,
    keep_headers,
    keep_querystring,
    redact_headers,
    redact_querystring,
)

STORED_QUERY = "api_key=k1&v=2024&api_key=k2&bare-token"


def test_reads_show_names_only() -> None:
    assert redact_headers({"X-Api-Key": "k", "X-Empty": ""}) == {"X-Api-Key": REDACTED, "X-Empty": ""}
    assert redact_querystring(STORED_QUERY) == (
        "api_key=<redacted>&v=<redacted>&api_key=<redacted>&<redacted>"
    )
    assert redact_querystring("a=&b=1") == "a=&b=<redacted>"
    assert redact_querystring(None) is None and redact_querystring("") == ""


def test_what_a_read_shows_written_back_keeps_everything() -> None:
    headers = {"X-Api-Key": "k", "X-Team": "blue"}
    assert keep_headers(redact_headers(headers), headers) == headers
    assert keep_querystring(redact_querystring(STORED_QUERY), STORED_QUERY) == STORED_QUERY


def test_marks_and_new_values_mix() -> None:
    assert keep_headers({"x-api-key": REDACTED, "X-New": "n"}, {"X-Api-Key": "k"}) == {
        "x-api-key": "k",
        "X-New": "n",
    }
    # The n-th repeat keeps the n-th stored value; order and new values are the body's.
    assert keep_querystring("v=2025&api_key=<redacted>&api_key=<redacted>", STORED_QUERY) == (
        "v=2025&api_key=k1&api_key=k2"
    )
    assert keep_querystring("x=1", STORED_QUERY) == "x=1"
    assert keep_querystring("", STORED_QUERY) is None


def test_keeping_what_is_not_stored_keeps_nothing() -> None:
    """A mark for a header or parameter removed meanwhile (or typed in) leaves it out: the stored state
    says there is none; the rest of the body applies."""
    assert keep_headers({"X-Gone": REDACTED, "X-New": "n"}, {"X-Api-Key": "k"}) == {"X-New": "n"}
    assert keep_querystring("other=<redacted>&v=1", STORED_QUERY) == "v=1"
    assert keep_querystring("<redacted>&<redacted>", STORED_QUERY) == "bare-token"
    assert keep_querystring("v=<redacted>", None) is None


def test_what_counts_as_a_new_secret() -> None:
    assert carries_new_secret("t", None, None)
    assert carries_new_secret(None, {"X": "v"}, None)
    assert carries_new_secret(None, None, "a=1")
    assert carries_new_secret(None, None, "bare")
    for token, headers, query in (
        (None, None, None),
        ("", {}, ""),
        (REDACTED, {"X": REDACTED, "Y": ""}, "a=<redacted>&<redacted>&b="),
    ):
        assert not carries_new_secret(token, headers, query)
