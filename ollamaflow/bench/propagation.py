"""The propagation scenario: how long a change takes to be applied on every data plane.

Starts NATS and PostgreSQL (embedded unless given), simulators, a control plane probing every backend,
and M data planes, then creates N backends (spread over the simulators, in frontends of up to 100)
through the admin API. Two kinds of change are timed, one at a time, each after the cluster is quiet:

- an admin write (PATCH of a backend's Name), from just before the request until the last data plane
  reported that it applied a revision holding it;
- a health change of one backend (its own simulator is stopped, later started again; that backend is
  probed every 100 ms with thresholds of 1), from the moment the control plane recorded the change
  (``UnhealthySinceUtc`` / ``HealthySinceUtc`` of its admin health view) until the last data plane
  reported the revision holding it. Detecting the failure is the probe interval's business, not
  propagation's, so it is left out.

Data planes report at once after applying a snapshot, so a report's arrival is the moment of applying
(plus a NATS hop). Which revision first held the change is checked afterwards against the snapshot
key's history; a sample whose revision cannot be found there any more is counted as skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import msgspec
import nats

from ollamaflow.bench.scenarios import percentile
from shared.bus import Bus
from shared.errors import BusError, SnapshotRejected
from shared.snapshot import Snapshot, decode
from shared.wire.reports import decode_report

__all__ = ["Applied", "Figures", "PropagationOptions", "PropagationReport", "Sampler", "figures", "progress"]

TOKEN = "bench-admin-token-" + "x" * 16
PER_FRONTEND = 100
FLIP = "flip"
# The longest a change may take to land before the run gives up: generous, so that a loaded machine
# yields (bad) figures rather than no figures.
_LAND = 60.0


@dataclass(frozen=True, slots=True)
class PropagationOptions:
    backends: int = 1000
    dataplanes: int = 4
    samples: int = 50  # admin writes timed
    health_samples: int = 20  # health changes timed (alternately down and up)
    sims: int = 4  # simulator processes the backends are spread over
    health_interval: float = 5.0  # the control plane's probe interval for the N backends
    nats_url: str | None = None
    database_url: str | None = None
    logs: Path | None = None  # keep every process's log here (INFO level), and show each sample


class Figures(msgspec.Struct, frozen=True, kw_only=True):
    samples: int
    skipped: int  # changes whose first revision could not be told apart afterwards
    p50_ms: float
    p99_ms: float
    max_ms: float


class PropagationReport(msgspec.Struct, frozen=True, kw_only=True):
    backends: int
    frontends: int
    dataplanes: int
    snapshot_bytes: int
    admin_write: Figures
    health_change: Figures


def figures(values_ms: list[float], skipped: int) -> Figures:
    ordered = sorted(values_ms)
    return Figures(
        samples=len(ordered),
        skipped=skipped,
        p50_ms=percentile(ordered, 0.50),
        p99_ms=percentile(ordered, 0.99),
        max_ms=ordered[-1] if ordered else 0.0,
    )


@dataclass(slots=True)
class Applied:
    """Every revision each data plane reported, with when the report arrived (first report only)."""

    dataplanes: list[str]
    seen: dict[str, list[tuple[int, float, float]]] = field(default_factory=dict)  # (revision, perf, wall)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def on_report(self, data: bytes) -> None:
        perf, wall = time.perf_counter(), time.time()
        with contextlib.suppress(msgspec.DecodeError):
            report = decode_report(data)
            history = self.seen.setdefault(report.id, [])
            if not history or report.applied_revision > history[-1][0]:
                history.append((report.applied_revision, perf, wall))
                self.changed.set()

    def latest(self) -> dict[str, int]:
        return {d: self.seen[d][-1][0] if self.seen.get(d) else 0 for d in self.dataplanes}

    def reached(self, revision: int) -> list[tuple[float, float]] | None:
        """(perf, wall) at which each data plane first applied ``revision`` or later; None until all did."""
        times = []
        for dataplane in self.dataplanes:
            first = next((t for t in self.seen.get(dataplane, ()) if t[0] >= revision), None)
            if first is None:
                return None
            times.append((first[1], first[2]))
        return times

    async def wait(self, predicate: Callable[[], bool], within: float, what: str) -> None:
        deadline = time.monotonic() + within
        while not predicate():
            self.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"timed out waiting for {what}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, 0.2))


class _Stored(msgspec.Struct):
    revision: int = 0


async def _stored(bus: Bus) -> tuple[int, int]:
    """The stored revision and its KV sequence."""
    head = await bus.read_snapshot_head()
    return (msgspec.json.decode(head[0], type=_Stored).revision, head[1]) if head else (0, 0)


async def _history(nats_url: str, bus: Bus, after: int) -> list[Snapshot]:
    """The snapshots stored after KV sequence ``after`` that the stream still holds, oldest first."""
    names = bus.names
    subject = names.bucket_subject(names.snapshot_key)
    found = []
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        sequence = after + 1
        while True:
            try:
                msg = await js.get_msg(names.bucket_stream, seq=sequence, subject=subject, next=True)
            except nats.js.errors.NotFoundError:
                break
            sequence = (msg.seq or sequence) + 1
            with contextlib.suppress(SnapshotRejected, BusError):
                if msg.data:
                    found.append(decode(await bus.expand_snapshot(msg.data)))
    finally:
        await nc.close()
    return found


def progress(message: str) -> None:
    """A line on stderr: the set-up of a large cluster takes a while."""
    print(f"propagation: {message}", file=sys.stderr, flush=True)


def _backend(snapshot: Snapshot, ident: str):  # type: ignore[no-untyped-def]
    return next((b for b in snapshot.content.backends if b.id == ident), None)


@dataclass(slots=True)
class Sampler:
    options: PropagationOptions
    admin: httpx.AsyncClient
    bus: Bus
    nats_url: str
    applied: Applied
    flip: Callable[[bool], None]  # start (True) or stop (False) the flip backend's simulator

    async def quiet(self) -> tuple[int, int]:
        """Wait until no new revision came for 300 ms and every data plane applied the stored one;
        that revision and its KV sequence."""
        stable_since, last = time.monotonic(), (-1, -1)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            stored = await _stored(self.bus)
            if stored != last:
                stable_since, last = time.monotonic(), stored
            elif time.monotonic() - stable_since >= 0.3 and set(self.applied.latest().values()) == {
                stored[0]
            }:
                return stored
            await asyncio.sleep(0.05)
        raise RuntimeError("the cluster never became quiet (revisions keep coming or a data plane lags)")

    async def first_holding(self, after: int, holds: Callable[[Snapshot], bool]) -> int | None:
        """The first revision stored after KV sequence ``after`` for which ``holds`` is true."""
        for snapshot in await _history(self.nats_url, self.bus, after):
            if holds(snapshot):
                return snapshot.revision
        return None

    async def admin_write(self, sample: int) -> float | None:
        ident = f"b{(sample * 7919) % self.options.backends:05d}"
        name = f"bench-{sample}-{uuid.uuid4().hex[:6]}"
        before, sequence = await self.quiet()
        start = time.perf_counter()
        resp = await self.admin.patch(f"/v1.0/backends/{ident}", json={"Name": name})
        resp.raise_for_status()
        patched = time.perf_counter()
        await self.applied.wait(
            lambda: all(r > before for r in self.applied.latest().values()), _LAND, "the admin write to land"
        )
        revision = await self.first_holding(
            sequence, lambda s: getattr(_backend(s, ident), "name", "") == name
        )
        if revision is None:
            return None
        await self.applied.wait(lambda: self.applied.reached(revision) is not None, _LAND, "every data plane")
        times = self.applied.reached(revision)
        assert times is not None
        if self.options.logs is not None:
            progress(
                f"patch {1000 * (patched - start):.1f} ms, applied "
                + ", ".join(f"{1000 * (p - start):.1f}" for p, _ in times)
            )
        return (max(perf for perf, _ in times) - start) * 1000.0

    async def health_change(self, healthy: bool) -> float | None:
        before, sequence = await self.quiet()
        await asyncio.to_thread(self.flip, healthy)  # off the loop: report arrivals keep their times
        await self.applied.wait(
            lambda: all(r > before for r in self.applied.latest().values()),
            _LAND,
            "the health change to land",
        )
        revision = await self.first_holding(
            sequence,
            lambda s: (b := _backend(s, FLIP)) is not None and b.health_checked and b.healthy == healthy,
        )
        if revision is None:
            return None
        await self.applied.wait(lambda: self.applied.reached(revision) is not None, _LAND, "every data plane")
        times = self.applied.reached(revision)
        assert times is not None
        health = (await self.admin.get(f"/v1.0/backends/{FLIP}/health")).json()
        since = health["HealthySinceUtc" if healthy else "UnhealthySinceUtc"]
        if not since:
            return None
        detected = datetime.fromisoformat(since.replace("Z", "+00:00")).timestamp()
        return (max(wall for _, wall in times) - detected) * 1000.0
