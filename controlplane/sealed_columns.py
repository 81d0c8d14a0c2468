"""Backend secrets sealed in the database as on the bus: a dump or a backup of Postgres holds no token.

``BearerToken``, ``Querystring`` and ``Headers`` are stored sealed with the fleet's secrets key
(``shared.secret_box.seal_stored``: AES-256-GCM, bound to the column). Column types do it as values
cross the driver, so every reader of a ``BackendRow`` (the admin API, the snapshot builder, the log
redaction) sees plain values and nothing else changes. Empty values stay as they are (``None``, ``{}``),
so whether a backend has a secret shows without the key.

The keyring is the process's (``use_keyring``, called when a control plane is created): every
replica of a fleet holds the same key. Without one nothing is sealed, and values stored in clear (by
a version before this, or before a key was set) are read as they are; ``seal_stored_secrets`` seals
those, and re-seals values of a previous key with the current one, when a replica starts. A value
sealed with a key this process does not hold cannot be read: that replica stays "starting" and says
which key it lacks (``StoredSecretsLocked``), rather than lose or publish anything.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.types import TypeDecorator

from shared.secret_box import Keyring, open_stored, seal_stored, sealed_key_id

__all__ = [
    "SealedJson",
    "SealedText",
    "StoredSecretsLocked",
    "seal_stored_secrets",
    "use_keyring",
]

log = logging.getLogger("ollamaflow.controlplane.secrets")

_keyring = Keyring()
_encoder = msgspec.json.Encoder(order="deterministic")
_decoder = msgspec.json.Decoder(dict[str, str])


class StoredSecretsLocked(Exception):
    """Stored backend secrets are sealed with a key this control plane does not hold."""


def use_keyring(keyring: Keyring) -> None:
    """Seal and open stored secrets with ``keyring`` from now on (this process's control plane's)."""
    global _keyring
    _keyring = keyring


def _is_sealed(value: str) -> bool:
    return bool(sealed_key_id(value))


class SealedText(TypeDecorator[str]):
    """A text column whose non-empty values are stored sealed."""

    impl = sa.String
    cache_ok = True

    def __init__(self, column: str) -> None:
        super().__init__()
        self.column = column

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        key = _keyring.current
        if not value or key is None:
            return value
        return seal_stored(key, self.column, value.encode("utf-8"))

    def process_result_value(self, value: str | None, dialect: Any) -> str | None:
        if not value or not _is_sealed(value):
            return value  # empty, or stored in clear
        return open_stored(_keyring, self.column, value).decode("utf-8")


class SealedJson(TypeDecorator[dict[str, str]]):
    """A JSONB column holding a string map, stored as one sealed JSON string when it is not empty."""

    impl = JSONB
    cache_ok = True

    def __init__(self, column: str) -> None:
        super().__init__()
        self.column = column

    def process_bind_param(self, value: dict[str, str] | None, dialect: Any) -> Any:
        key = _keyring.current
        if not value or key is None:
            return value
        return seal_stored(key, self.column, _encoder.encode(value))

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        if isinstance(value, str) and _is_sealed(value):
            return _decoder.decode(open_stored(_keyring, self.column, value))
        return value  # empty, or stored in clear


_COLUMNS = ("bearer_token", "querystring", "headers")


async def seal_stored_secrets(engine: AsyncEngine) -> int:
    """Seal backend secrets stored in clear and re-seal those of a previous key, with the current key;
    how many backends were rewritten. ``StoredSecretsLocked`` if a value is sealed with a key this
    process does not hold (then nothing is changed)."""
    table = sa.table("backends", sa.column("identifier"), *(sa.column(name) for name in _COLUMNS))
    raw = [table.c[name] for name in _COLUMNS]  # untyped: as stored, not opened
    async with engine.begin() as conn:
        rows = (await conn.execute(sa.select(table.c.identifier, *raw).with_for_update())).all()
        current = _keyring.current
        stale: list[str] = []
        for ident, *values in rows:
            for value in values:
                text = _stored_text(value)
                if not text:
                    continue
                key_id = sealed_key_id(text)
                if key_id and _keyring.find(key_id) is None:
                    held = ", ".join(_keyring.ids()) or "none"
                    raise StoredSecretsLocked(
                        f"the stored secrets of backend {ident!r} are sealed with secrets key {key_id}, "
                        f"and this control plane holds {held} (set OLLAMAFLOW_SECRETS_KEY to that key, "
                        "or name it in OLLAMAFLOW_SECRETS_PREVIOUS_KEYS during a rotation)"
                    )
                if current is not None and key_id != current.id:
                    stale.append(ident)
                    break
        if not stale:
            return 0
        typed = sa.table(
            "backends",
            sa.column("identifier"),
            sa.column("bearer_token", SealedText("bearer_token")),
            sa.column("querystring", SealedText("querystring")),
            sa.column("headers", SealedJson("headers")),
        )
        for ident in stale:
            row = (
                await conn.execute(
                    sa.select(typed.c.bearer_token, typed.c.querystring, typed.c.headers).where(
                        typed.c.identifier == ident
                    )
                )
            ).one()
            await conn.execute(
                typed.update()
                .where(typed.c.identifier == ident)
                .values(bearer_token=row[0], querystring=row[1], headers=row[2])
            )
    assert current is not None  # nothing is stale without a current key
    log.info("sealed the stored secrets of %d backend(s) with secrets key %s", len(stale), current.id)
    return len(stale)


def _stored_text(value: object) -> str:
    """A raw stored value as text ("" when empty). The driver decodes JSONB itself: a map stored in
    clear arrives as a dict, a sealed one as its string."""
    if not value:
        return ""
    if isinstance(value, str):
        return value
    return _encoder.encode(value).decode()  # a clear map: not sealed text
