"""Where snapshot content comes from: every configuration row (one consistent read), live data planes
with their demand (and which of them drain), what the monitor observed of each backend, and the admin
tokens' digests. Backend secrets are sealed with the secrets key; without one they are withheld, which
is logged as an error.

The limit shares and key rates of the stored snapshot are handed to the builder as the previous
split, so that small load changes keep them (no new revision) and racing replicas settle on the same.

Rows are read incrementally (``controlplane.publish.rows``) and views of unchanged rows are kept
(``ViewMemo``): a publish after one admin write reads and builds about one row, not thousands.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable

from controlplane.db import Database
from controlplane.publish.builder import (
    BackendRuntime,
    ViewMemo,
    backend_secrets,
    build_content,
    key_rates_of,
    shares_of,
)
from controlplane.publish.rows import RowCache, read_tables
from controlplane.reports import DataPlaneRegistry
from controlplane.tables import ApiKeyRow, BackendRow, FrontendRow
from shared.bus import Bus
from shared.credentials import digest
from shared.errors import BusError, SnapshotRejected
from shared.logs import KnownSecrets
from shared.secret_box import SecretsKey, seal_secrets, secret_values
from shared.snapshot import SnapshotContent, decode

__all__ = ["ConfigSource"]

log = logging.getLogger("ollamaflow.controlplane.publisher")

_NAMED = 10  # backends named in the log line about withheld secrets


class ConfigSource:
    """Reads the rows and hands them to the pure builder."""

    def __init__(
        self,
        db: Database,
        registry: DataPlaneRegistry,
        runtime: Callable[[str], BackendRuntime] | None = None,
        *,
        bus: Bus | None = None,
        admin_tokens: Iterable[str] = (),
        secrets_key: SecretsKey | None = None,
        known_secrets: KnownSecrets | None = None,
    ) -> None:
        self._db = db
        self._registry = registry
        self._runtime = runtime
        self._bus = bus
        self._admin_digests = tuple(sorted({digest(token) for token in admin_tokens}))
        self._known_secrets = known_secrets
        self._withheld: tuple[str, ...] = ()
        self._frontends = RowCache(FrontendRow)
        self._backends = RowCache(BackendRow)
        self._api_keys = RowCache(ApiKeyRow)
        self._rows: tuple[list[FrontendRow], list[BackendRow], list[ApiKeyRow]] | None = None  # last read
        # Each backend row's secret values, by the row object (kept while the row is unchanged): reading
        # three ORM attributes of a thousand rows on every publish cost a few milliseconds.
        self._secrets_of: dict[int, tuple[BackendRow, tuple[str, ...]]] = {}
        # Sealing is deterministic, so a view kept for an unchanged row keeps its sealed text too.
        self._memo = ViewMemo(
            functools.partial(seal_secrets, secrets_key) if secrets_key is not None else None
        )

    async def content(
        self, previous: SnapshotContent | None = None, *, reread: bool = True
    ) -> SnapshotContent:
        """The content to publish now. ``previous``: the stored snapshot's content if the caller has
        it at hand (else it is read from the bus), for the shares and key rates to keep. ``reread``
        False: only what the monitor observed or the data planes reported changed, so the rows of the
        last read serve again (one consistent read, as old as the last publish) instead of a round
        trip for a thousand row versions."""
        if previous is None:
            previous = await self._stored_content()
        if reread or self._rows is None:
            async with self._db.session() as session:
                # One REPEATABLE READ transaction: frontends, backends and keys from the same moment, so
                # a frontend never names a backend the snapshot lacks.
                await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
                frontends, backends, api_keys = await read_tables(
                    session, self._frontends, self._backends, self._api_keys
                )
            self._rows = (frontends, backends, api_keys)
            if self._known_secrets is not None:  # only a new read can bring new secrets
                self._known_secrets.replace(self._secret_values(backends))
        frontends, backends, api_keys = self._rows
        content = build_content(
            frontends,
            backends,
            self._registry.live_ids(),
            self._runtime,
            demand=self._registry.demand(),
            previous_shares=shares_of(previous) if previous is not None else None,
            api_keys=api_keys,
            key_demand=self._registry.key_demand(),
            previous_key_rates=key_rates_of(previous) if previous is not None else None,
            admin_token_digests=self._admin_digests,
            draining=self._registry.draining_ids(),
            memo=self._memo,
        )
        self._say_withheld(tuple(b.id for b in content.backends if b.secrets_withheld))
        return content

    def _secret_values(self, backends: list[BackendRow]) -> set[str]:
        """Every secret value of ``backends`` (for log redaction), computed again only for rows that
        are not the objects met last time."""
        kept: dict[int, tuple[BackendRow, tuple[str, ...]]] = {}
        values: set[str] = set()
        for row in backends:
            known = self._secrets_of.get(id(row))
            if known is None or known[0] is not row:
                known = (row, tuple(secret_values((backend_secrets(row),))))
            kept[id(row)] = known
            values.update(known[1])
        self._secrets_of = kept
        return values

    def _say_withheld(self, withheld: tuple[str, ...]) -> None:
        """Loudly, once per change: backends published without their secrets (no secrets key here),
        which data planes therefore refuse to use."""
        if withheld == self._withheld:
            return
        self._withheld = withheld
        if withheld:
            more = f" and {len(withheld) - _NAMED} more" if len(withheld) > _NAMED else ""
            log.error(
                "backends %s%s have a BearerToken, Headers or Querystring but this control plane has no "
                "secrets key (OLLAMAFLOW_SECRETS_KEY or OLLAMAFLOW_SECRETS_KEY_FILE): they are published "
                "without them and data planes will not use them",
                ", ".join(withheld[:_NAMED]),
                more,
            )
        else:
            log.info("no backend is published without its secrets any more")

    async def _stored_content(self) -> SnapshotContent | None:
        """The content of the snapshot on the bus; None when there is none or it cannot be read."""
        if self._bus is None:
            return None
        try:
            stored = await self._bus.read_snapshot()
            return decode(stored[0]).content if stored else None
        except (BusError, SnapshotRejected) as exc:
            log.debug("no previous shares to keep: %s", exc)
            return None
