"""Sealing backend secrets for the snapshot: keys, the sealed text, what opens it and what does not."""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

import pytest

from shared.errors import ConfigError
from shared.secret_box import (
    BackendSecrets,
    Keyring,
    SealError,
    load_keyring,
    open_secrets,
    open_stored,
    parse_key,
    query_pairs,
    seal_secrets,
    seal_stored,
    sealed_key_id,
    secret_values,
)

RAW = bytes(range(32))
SECRETS = BackendSecrets(
    bearer_token="tok-123", querystring="api_key=q-456&v=1", headers={"X-Api-Key": "h-789"}
)


def test_a_key_is_32_bytes_in_hex_or_url_safe_base64() -> None:
    from_hex = parse_key(RAW.hex())
    from_b64 = parse_key(base64.urlsafe_b64encode(RAW).decode().rstrip("="))
    assert from_hex.id == from_b64.id and len(from_hex.id) == 16
    assert parse_key("  " + secrets.token_urlsafe(32) + "\n").raw  # what env.example and `up` make
    for bad in ("", "short", RAW.hex()[:-2], base64.urlsafe_b64encode(RAW + b"x").decode()):
        with pytest.raises(ValueError, match="32 random bytes"):
            parse_key(bad)
    assert RAW.hex() not in repr(from_hex) and from_hex.id in repr(from_hex)


def test_sealed_text_opens_with_its_key_only_for_its_backend() -> None:
    ring = load_keyring(RAW.hex())
    sealed = seal_secrets(ring.current, "b1", SECRETS)  # type: ignore[arg-type]
    assert sealed.startswith(f"v1.{ring.current.id}.") and sealed_key_id(sealed) == ring.current.id  # type: ignore[union-attr]
    for value in ("tok-123", "q-456", "h-789", "X-Api-Key"):
        assert value not in sealed
    assert open_secrets(ring, "b1", sealed) == SECRETS
    with pytest.raises(SealError, match="fail authentication"):
        open_secrets(ring, "b2", sealed)  # moved to another backend
    body = sealed.rsplit(".", 1)[1]
    flipped = sealed[: -len(body)] + ("A" if body[0] != "A" else "B") + body[1:]
    with pytest.raises(SealError, match="fail authentication"):
        open_secrets(ring, "b1", flipped)
    with pytest.raises(SealError, match="unknown format"):
        open_secrets(ring, "b1", "v2.x.y")
    other = load_keyring(secrets.token_urlsafe(32))
    with pytest.raises(SealError, match=f"sealed with secrets key {ring.current.id}.*OLLAMAFLOW_SECRETS_KEY"):  # type: ignore[union-attr]
        open_secrets(other, "b1", sealed)
    with pytest.raises(SealError, match="holds none"):
        open_secrets(load_keyring(), "b1", sealed)


def test_sealing_is_deterministic_per_content() -> None:
    key = parse_key(RAW.hex())
    assert seal_secrets(key, "b1", SECRETS) == seal_secrets(key, "b1", SECRETS)
    assert seal_secrets(key, "b1", SECRETS) != seal_secrets(key, "b2", SECRETS)
    changed = BackendSecrets(bearer_token="tok-124", querystring=SECRETS.querystring, headers=SECRETS.headers)
    assert (
        seal_secrets(key, "b1", SECRETS).split(".")[2][:16]
        != seal_secrets(key, "b1", changed).split(".")[2][:16]
    )


def test_a_previous_key_still_opens_during_a_rotation() -> None:
    old, new = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    sealed = seal_secrets(parse_key(old), "b1", SECRETS)
    assert open_secrets(load_keyring(new, previous=f" {old} ,"), "b1", sealed) == SECRETS
    assert load_keyring(new, previous=[old]).ids() == (parse_key(new).id, parse_key(old).id)


def test_keyring_settings_are_checked_and_named(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(RAW.hex() + "\n")
    assert load_keyring(key_file=key_file).current.id == parse_key(RAW.hex()).id  # type: ignore[union-attr]
    assert not load_keyring()
    cases = [
        ({"key": "nope"}, "OLLAMAFLOW_SECRETS_KEY:"),
        ({"key_file": tmp_path / "missing"}, "OLLAMAFLOW_SECRETS_KEY_FILE: cannot read"),
        ({"key": RAW.hex(), "key_file": key_file}, "not both"),
        ({"key": RAW.hex(), "previous": "bad"}, "OLLAMAFLOW_SECRETS_PREVIOUS_KEYS"),
        ({"previous": RAW.hex()}, "needs OLLAMAFLOW_SECRETS_KEY"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ConfigError, match=message):
            load_keyring(**kwargs)  # type: ignore[arg-type]


def test_secret_values_and_query_pairs() -> None:
    assert query_pairs("?a=1&b&c=&&d=x=y") == [("a", "1"), ("b", None), ("c", ""), ("d", "x=y")]
    assert secret_values([SECRETS, BackendSecrets(querystring="flag")]) == {"tok-123", "q-456", "1", "h-789"}


def test_stored_values_open_only_for_their_column_and_with_a_held_key() -> None:
    key = parse_key(secrets.token_urlsafe(32))
    ring = Keyring(key)
    sealed = seal_stored(key, "bearer_token", b"tok-1")
    assert sealed.startswith(f"v1.{key.id}.") and b"tok-1" not in sealed.encode()
    assert open_stored(ring, "bearer_token", sealed) == b"tok-1"
    assert seal_stored(key, "bearer_token", b"tok-1") == sealed  # deterministic, like the snapshot's
    with pytest.raises(SealError, match="fails authentication"):
        open_stored(ring, "querystring", sealed)  # moved to another column
    other = Keyring(parse_key(secrets.token_urlsafe(32)))
    with pytest.raises(SealError, match=f"secrets key {key.id}"):
        open_stored(other, "bearer_token", sealed)
    snapshot_text = seal_secrets(key, "b1", BackendSecrets(bearer_token="x"))
    with pytest.raises(SealError):  # a snapshot's sealed text never passes for a stored value
        open_stored(ring, "bearer_token", snapshot_text)
