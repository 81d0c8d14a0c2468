"""Backend secrets sealed for the snapshot: what travels on the bus is ciphertext only.

A backend's ``BearerToken``, ``Headers`` and ``Querystring`` reach the data planes inside the snapshot,
which NATS keeps on its disk (with history) and each data plane caches on its own. So the control
plane seals them with the fleet's *secrets key* (``OLLAMAFLOW_SECRETS_KEY``), a 256-bit key that the
planes are given and NATS never sees, and data planes open them into memory when they apply a snapshot.

The cipher is AES-256-GCM. The associated data binds a sealed value to its backend id, so it cannot be
moved to another backend. The nonce is synthetic: an HMAC of the associated data and the plaintext under
a second key derived from the same secret. Sealing is therefore deterministic: equal configuration gives
equal snapshot bytes and an equal content hash (the publisher skips unchanged content, and racing
control planes agree), and a nonce can repeat only for an equal plaintext, which reveals no more than
"unchanged". The sealed text names the key that sealed it (a key id: an HMAC of the key, not the key),
so data planes can hold the previous key during a rotation and say which key they miss.

Pure: no I/O but ``load_keyring``'s optional key file.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.errors import ConfigError

__all__ = [
    "BackendSecrets",
    "Keyring",
    "SealError",
    "SecretsKey",
    "load_keyring",
    "open_secrets",
    "open_stored",
    "parse_key",
    "query_pairs",
    "seal_secrets",
    "seal_stored",
    "sealed_key_id",
    "secret_values",
]

_VERSION = "v1"
_AD_PREFIX = b"ollamaflow backend secrets v1\x00"
# Values sealed in the control plane's database (``controlplane.sealed_columns``): another associated
# data, so a stored value can never pass for a snapshot's, or the other way round.
_STORED_PREFIX = b"ollamaflow stored secret v1\x00"
_NONCE_BYTES = 12
KEY_HELP = (
    "32 random bytes as 64 hex digits or URL-safe base64 "
    "(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
)


class SealError(Exception):
    """A sealed value that cannot be opened with the keys at hand (the message says why)."""


class BackendSecrets(msgspec.Struct, frozen=True, kw_only=True):
    """The secret fields of one backend, as sealed together."""

    bearer_token: str | None = None
    querystring: str | None = None
    headers: dict[str, str] = {}

    def __bool__(self) -> bool:
        return bool(self.bearer_token or self.querystring or self.headers)


_encoder = msgspec.json.Encoder(order="deterministic")
_decoder = msgspec.json.Decoder(BackendSecrets)


def _derive(key: bytes, purpose: bytes) -> bytes:
    return hmac.digest(key, b"ollamaflow/secrets/" + purpose, "sha256")


@dataclass(frozen=True, slots=True, repr=False)
class SecretsKey:
    """One secrets key with its derived parts. Its repr never shows the key."""

    raw: bytes
    id: str = field(init=False)
    _aead: AESGCM = field(init=False)
    _nonce_key: bytes = field(init=False)

    def __post_init__(self) -> None:
        if len(self.raw) != 32:
            raise ValueError("a secrets key has 32 bytes")
        object.__setattr__(self, "id", _derive(self.raw, b"key-id")[:8].hex())
        object.__setattr__(self, "_aead", AESGCM(_derive(self.raw, b"aes-256-gcm")))
        object.__setattr__(self, "_nonce_key", _derive(self.raw, b"nonce"))

    def __repr__(self) -> str:
        return f"SecretsKey(id={self.id})"

    def seal(self, plaintext: bytes, associated: bytes) -> bytes:
        mac = hmac.new(self._nonce_key, len(associated).to_bytes(4, "big") + associated, "sha256")
        mac.update(plaintext)
        nonce = mac.digest()[:_NONCE_BYTES]
        return nonce + self._aead.encrypt(nonce, plaintext, associated)

    def open(self, sealed: bytes, associated: bytes) -> bytes:
        nonce, ciphertext = sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:]
        return self._aead.decrypt(nonce, ciphertext, associated)


@dataclass(frozen=True, slots=True)
class Keyring:
    """The key that seals (``current``) and older keys that may still open (a rotation)."""

    current: SecretsKey | None = None
    previous: tuple[SecretsKey, ...] = ()

    def __bool__(self) -> bool:
        return self.current is not None

    def ids(self) -> tuple[str, ...]:
        return tuple(k.id for k in (self.current, *self.previous) if k is not None)

    def find(self, key_id: str) -> SecretsKey | None:
        for key in (self.current, *self.previous):
            if key is not None and key.id == key_id:
                return key
        return None


def parse_key(text: str) -> SecretsKey:
    """A key from 64 hex digits or the URL-safe base64 of 32 bytes; ValueError otherwise."""
    text = text.strip()
    raw: bytes | None = None
    if len(text) == 64:
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raw = None
    if raw is None:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            raw = b""
    if len(raw) != 32:
        raise ValueError(f"a secrets key is {KEY_HELP}")
    return SecretsKey(raw)


def load_keyring(key: str = "", key_file: Path | None = None, previous: str | Iterable[str] = "") -> Keyring:
    """The keyring from the settings' values; ConfigError naming the setting for a bad one.

    ``key`` and ``key_file`` are OLLAMAFLOW_SECRETS_KEY and OLLAMAFLOW_SECRETS_KEY_FILE (at most one);
    ``previous`` is OLLAMAFLOW_SECRETS_PREVIOUS_KEYS, comma-separated.
    """
    if key.strip() and key_file is not None:
        raise ConfigError("set OLLAMAFLOW_SECRETS_KEY or OLLAMAFLOW_SECRETS_KEY_FILE, not both")
    current: SecretsKey | None = None
    if key_file is not None:
        try:
            text = key_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"OLLAMAFLOW_SECRETS_KEY_FILE: cannot read {key_file}: {exc}") from exc
        try:
            current = parse_key(text)
        except ValueError as exc:
            raise ConfigError(f"OLLAMAFLOW_SECRETS_KEY_FILE {key_file}: {exc}") from None
    elif key.strip():
        try:
            current = parse_key(key)
        except ValueError as exc:
            raise ConfigError(f"OLLAMAFLOW_SECRETS_KEY: {exc}") from None
    items = previous.split(",") if isinstance(previous, str) else list(previous)
    older: list[SecretsKey] = []
    for item in (i for i in items if i.strip()):
        try:
            older.append(parse_key(item))
        except ValueError as exc:
            raise ConfigError(f"OLLAMAFLOW_SECRETS_PREVIOUS_KEYS: {exc}") from None
    if current is None and older:
        raise ConfigError("OLLAMAFLOW_SECRETS_PREVIOUS_KEYS needs OLLAMAFLOW_SECRETS_KEY (the current key)")
    return Keyring(current, tuple(older))


def _associated(backend_id: str) -> bytes:
    return _AD_PREFIX + backend_id.encode("utf-8")


def seal_secrets(key: SecretsKey, backend_id: str, secrets: BackendSecrets) -> str:
    """``secrets`` of backend ``backend_id`` as text for the snapshot: ``v1.<key id>.<base64url>``."""
    sealed = key.seal(_encoder.encode(secrets), _associated(backend_id))
    return f"{_VERSION}.{key.id}.{base64.urlsafe_b64encode(sealed).decode('ascii').rstrip('=')}"


def sealed_key_id(sealed: str) -> str:
    """The id of the key that sealed ``sealed`` ("" if it is not sealed text)."""
    parts = sealed.split(".")
    return parts[1] if len(parts) == 3 and parts[0] == _VERSION else ""


def open_secrets(keyring: Keyring, backend_id: str, sealed: str) -> BackendSecrets:
    """The secrets sealed for backend ``backend_id``; SealError (saying why) if they cannot be opened."""
    version, _, rest = sealed.partition(".")
    key_id, _, body = rest.partition(".")
    if version != _VERSION or not key_id or not body:
        raise SealError("its sealed secrets are in an unknown format")
    key = keyring.find(key_id)
    if key is None:
        held = ", ".join(keyring.ids()) or "none"
        raise SealError(
            f"its secrets are sealed with secrets key {key_id}, and this process holds {held} "
            "(OLLAMAFLOW_SECRETS_KEY must be the control plane's key)"
        )
    try:
        plaintext = key.open(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)), _associated(backend_id))
        return _decoder.decode(plaintext)
    except (InvalidTag, binascii.Error, ValueError, msgspec.DecodeError):
        raise SealError(f"its sealed secrets fail authentication with key {key_id}") from None


def seal_stored(key: SecretsKey, column: str, plaintext: bytes) -> str:
    """A secret for the database column ``column``, as ``v1.<key id>.<base64url>`` text."""
    sealed = key.seal(plaintext, _STORED_PREFIX + column.encode("utf-8"))
    return f"{_VERSION}.{key.id}.{base64.urlsafe_b64encode(sealed).decode('ascii').rstrip('=')}"


def open_stored(keyring: Keyring, column: str, sealed: str) -> bytes:
    """What ``seal_stored`` sealed for ``column``; SealError (saying why) if it cannot be opened."""
    version, _, rest = sealed.partition(".")
    key_id, _, body = rest.partition(".")
    if version != _VERSION or not key_id or not body:
        raise SealError(f"a stored {column} is in an unknown format")
    key = keyring.find(key_id)
    if key is None:
        held = ", ".join(keyring.ids()) or "none"
        raise SealError(
            f"stored backend secrets are sealed with secrets key {key_id}, and this control plane "
            f"holds {held} (OLLAMAFLOW_SECRETS_KEY, OLLAMAFLOW_SECRETS_PREVIOUS_KEYS)"
        )
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        return key.open(raw, _STORED_PREFIX + column.encode("utf-8"))
    except (InvalidTag, binascii.Error, ValueError):
        raise SealError(f"a stored {column} fails authentication with secrets key {key_id}") from None


def secret_values(secrets: Iterable[BackendSecrets]) -> set[str]:
    """Every secret value in ``secrets`` (for log redaction): tokens, header values, query values."""
    values: set[str] = set()
    for item in secrets:
        if item.bearer_token:
            values.add(item.bearer_token)
        values.update(v for v in item.headers.values() if v)
        values.update(v for _, v in query_pairs(item.querystring or "") if v)
    return values


def query_pairs(querystring: str) -> list[tuple[str, str | None]]:
    """``a=1&b&c=`` -> [("a", "1"), ("b", None), ("c", "")]: names with values, None for no ``=``."""
    pairs: list[tuple[str, str | None]] = []
    for part in querystring.lstrip("?").split("&"):
        if not part:
            continue
        name, sep, value = part.partition("=")
        pairs.append((name, value if sep else None))
    return pairs
