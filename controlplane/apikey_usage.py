"""API key usage: the data planes' per-key counters, kept in ``apikey_usage`` for the admin API.

Each data plane reports, per key, how many requests it accepted and refused for it since its process
started, under a start id of its own (``DataPlaneReport.key_usage``, ``start_id``). Counters only grow
within one run, so the table keeps one row per key and run (``source``: data plane id and start id)
holding the largest counters heard. Every control-plane replica hears every report and writes the same
values, and a restart of either plane starts a new row or re-sends what a row already holds: no use
is lost or counted twice. ``LastUsedUtc`` is the time a report first showed a row's counters grown.

Reports are batched: the latest counters per row are written every ``flush_interval`` seconds. Rows of
runs not heard from for ``fold_after`` seconds (and not live) are folded into the key's own totals in
one statement, so two replicas folding at once cannot count a row twice. (A data plane silent for
that long that then comes back under the same start id would count its old use again.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import text

from controlplane.clock import Clock
from controlplane.db import Database
from shared.wire.reports import DataPlaneReport

__all__ = ["KeyUsageRecorder", "source_of"]

log = logging.getLogger("ollamaflow.controlplane.apikeys")

_UPSERT = text(
    """
    INSERT INTO apikey_usage
        (key_identifier, source, requests_total, rate_limited_total, last_used_utc, updated_utc)
    SELECT identifier, CAST(:source AS varchar), CAST(:requests AS bigint), CAST(:limited AS bigint),
           CAST(:seen AS timestamptz), CAST(:now AS timestamptz)
    FROM apikeys WHERE identifier = CAST(:key AS varchar)
    ON CONFLICT (key_identifier, source) DO UPDATE SET
        last_used_utc = CASE
            WHEN EXCLUDED.requests_total + EXCLUDED.rate_limited_total
                > apikey_usage.requests_total + apikey_usage.rate_limited_total
            THEN EXCLUDED.last_used_utc ELSE apikey_usage.last_used_utc END,
        requests_total = GREATEST(apikey_usage.requests_total, EXCLUDED.requests_total),
        rate_limited_total = GREATEST(apikey_usage.rate_limited_total, EXCLUDED.rate_limited_total),
        updated_utc = EXCLUDED.updated_utc
    """
)
_FOLD = text(
    """
    WITH gone AS (
        DELETE FROM apikey_usage
        WHERE updated_utc < :cutoff AND NOT (source = ANY(CAST(:live AS text[])))
        RETURNING key_identifier, requests_total, rate_limited_total, last_used_utc
    ), sums AS (
        SELECT key_identifier, SUM(requests_total) AS requests, SUM(rate_limited_total) AS limited,
               MAX(last_used_utc) AS last_used
        FROM gone GROUP BY key_identifier
    )
    UPDATE apikeys SET
        requests_total = apikeys.requests_total + sums.requests,
        rate_limited_total = apikeys.rate_limited_total + sums.limited,
        last_used_utc = GREATEST(apikeys.last_used_utc, sums.last_used)
    FROM sums WHERE apikeys.identifier = sums.key_identifier
    """
)


def source_of(report: DataPlaneReport) -> str:
    """The run a report belongs to: data plane id and start id."""
    return f"{report.id}/{report.start_id}"[:300]


class KeyUsageRecorder:
    """Collects the reports' key counters and writes them in batches."""

    def __init__(
        self,
        db: Database,
        *,
        clock: Clock,
        live_sources: Callable[[], set[str]] = set,
        flush_interval: float = 2.0,
        fold_after: float = 3600.0,
    ) -> None:
        self._db = db
        self._clock = clock
        self._live_sources = live_sources
        self._flush_interval = flush_interval
        self._fold_after = fold_after
        # (key id, source) -> counters last heard, and when they last grew (as this replica saw it).
        self._heard: dict[tuple[str, str], tuple[int, int, datetime]] = {}
        self._pending: set[tuple[str, str]] = set()

    def record(self, report: DataPlaneReport) -> None:
        """Take the key counters of one report (the registry calls this for every report)."""
        if not report.key_usage:
            return
        source, now = source_of(report), self._clock.now()
        for key, usage in report.key_usage.items():
            row = (key[:128], source)
            before = self._heard.get(row)
            if before is not None and before[:2] == (usage.requests, usage.rate_limited):
                continue
            self._heard[row] = (usage.requests, usage.rate_limited, now)
            self._pending.add(row)

    async def flush(self) -> None:
        """Write the counters that changed since the last flush."""
        if not self._pending:
            return
        rows, self._pending = self._pending, set()
        now = self._clock.now()
        params = []
        for key, source in sorted(rows):
            requests, limited, seen = self._heard[(key, source)]
            row = {"key": key, "source": source, "requests": requests, "limited": limited, "seen": seen}
            params.append(row | {"now": now})
        try:
            async with self._db.session() as session:
                await session.exec(_UPSERT, params=params)
                await session.commit()
        except Exception:
            self._pending |= rows  # the next flush tries again: the counters are absolute
            raise

    async def fold(self) -> None:
        """Fold the rows of runs long gone into their keys' totals, and forget them here."""
        cutoff = self._clock.now() - timedelta(seconds=self._fold_after)
        live = sorted(self._live_sources())
        async with self._db.session() as session:
            await session.exec(_FOLD, params={"cutoff": cutoff, "live": live})
            await session.commit()
        for row, (_, _, seen) in list(self._heard.items()):
            if seen < cutoff and row[1] not in live:
                del self._heard[row]

    async def run(self, *, fold_every: float = 60.0) -> None:
        """Flush every ``flush_interval`` seconds and fold now and then, until cancelled."""
        since_fold = fold_every
        while True:
            await asyncio.sleep(self._flush_interval)
            since_fold += self._flush_interval
            try:
                await self.flush()
                if since_fold >= fold_every:
                    since_fold = 0.0
                    await self.fold()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: the counters wait for the next round
                log.warning("cannot record API key usage yet: %s", exc)
