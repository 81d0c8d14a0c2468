"""The CORS origin lists both planes' settings take (shared.cors)."""

from __future__ import annotations

import pytest

from shared.cors import MAX_ORIGINS, parse_origins


def test_origins_as_browsers_send_them_lower_case_in_order_without_repeats() -> None:
    text = " http://localhost:3000, HTTPS://UI.Example.com:8443 ,http://[::1]:3000,http://localhost:3000"
    assert parse_origins(text) == (
        "http://localhost:3000",
        "https://ui.example.com:8443",
        "http://[::1]:3000",
    )
    assert parse_origins("*") == ("*",)
    assert parse_origins("") == parse_origins(" , ") == parse_origins("none") == parse_origins("NONE") == ()


@pytest.mark.parametrize(
    "bad",
    [
        "http://localhost:3000/",  # browsers never send a path or a trailing slash
        "http://x/path",
        "localhost:3000",
        "ftp://x",
        "http://user@x",
        "http://x:0",
        "http://x:65536",
        "http://a b",
        "http://-x",
        "http://" + "a" * 300,
        "none,http://x",  # none alone or not at all
    ],
)
def test_anything_else_is_refused_naming_it(bad: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_origins(bad)
    assert str(caught.value)
    assert len(str(caught.value)) < 300  # a long value is cut short in the message


def test_the_list_is_bounded() -> None:
    many = ",".join(f"http://h{i}.example" for i in range(MAX_ORIGINS))
    assert len(parse_origins(many)) == MAX_ORIGINS
    with pytest.raises(ValueError, match=f"at most {MAX_ORIGINS}"):
        parse_origins(many + ",http://one-more.example")
