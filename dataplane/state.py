"""The snapshot this data plane routes by, its routing table, and the copy on disk.

``apply`` is the one way in: it takes snapshot bytes from any source (the bus watch, the periodic
re-read, the disk cache), checks them the same way (content hash, the control plane's signature,
revision), keeps the last good snapshot when the new one is rejected and remembers why,
and swaps the routing table in one assignment, so a request sees either the old table or the new one.
Backend secrets are opened into memory here (``dataplane.unseal``); the disk copy keeps the bus's bytes,
sealed, in an owner-only file.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dataplane.routing.table import RoutingTable
from dataplane.unseal import Opened, open_backends
from shared.errors import SnapshotOutdated, SnapshotRejected
from shared.logs import KnownSecrets
from shared.secret_box import BackendSecrets, Keyring, secret_values
from shared.signing import SnapshotTrust
from shared.snapshot import Snapshot, accept, admit
from shared.snapshot_codec import SnapshotDecoder

__all__ = ["SnapshotState"]

log = logging.getLogger("ollamaflow.dataplane.state")

_NAMED = 5  # backends named per reason in the report's snapshot error
# On a running loop the disk copy is written this long after the apply: the report that says the
# revision is applied goes out first (writing a megabyte took about 0.7 ms), and a burst of revisions
# is written once, the newest.
SAVE_DELAY = 0.05


@dataclass(slots=True, eq=False)
class SnapshotState:
    """The applied snapshot, the routing table built from it, and the last rejection."""

    cache_path: Path | None = None
    keyring: Keyring = field(default_factory=Keyring)  # opens the backends' sealed secrets
    # The opened secret values, kept out of log lines (``shared.logs``).
    known_secrets: KnownSecrets = field(default_factory=KnownSecrets)
    # Whose signatures make a snapshot acceptable; the default trusts nobody (accepts nothing).
    trust: SnapshotTrust = field(default_factory=SnapshotTrust)
    rng: random.Random = field(default_factory=random.Random)
    snapshot: Snapshot | None = None
    table: RoutingTable = field(default_factory=RoutingTable)
    # The last snapshot problem (for the report): a rejected snapshot, or backends of the applied one
    # whose secrets cannot be opened; replaced when a newer snapshot is applied.
    error: str = ""
    # Whether the last snapshot offered was refused (``error`` then says why); a newer one clears it.
    rejected: bool = False
    # Called with each newly applied snapshot, right after the table swap (e.g. admission's limits).
    listeners: list[Callable[[Snapshot], None]] = field(default_factory=list)
    _last_data: bytes = b""
    # The revision of the last whole snapshot taken from the bus (not from a delta), and the whole
    # form of a snapshot a delta brought before the bus held it (b"" once it does).
    _stored_revision: int = 0
    _ahead: bytes = b""
    # Decodes only what changed since the last snapshot (``shared.snapshot_codec``).
    _decoder: SnapshotDecoder = field(default_factory=SnapshotDecoder)
    _opened: Opened = field(default_factory=dict)  # the applied snapshot's opened secrets, for reuse
    _save_due: tuple[asyncio.TimerHandle, bytes] | None = None  # the disk copy's pending write

    @property
    def revision(self) -> int:
        return self.snapshot.revision if self.snapshot is not None else 0

    def apply(self, data: bytes, *, source: str, save: bool = True) -> bool:
        """Take ``data`` if it is newer and sound; True when the routing table changed.

        A snapshot older than the applied one is refused and reported, except one no older than the
        last whole snapshot stored on the bus: a delta ran ahead of its write (or of the write before
        it), and the write is landing now (or failed, and the next revision follows); that is passed
        over quietly."""
        if data == self._last_data:  # the periodic re-read mostly sees what the watch already gave
            if self._ahead and self._last_data is self._ahead:  # the delta's own write has landed
                self._stored_revision, self._ahead = self.revision, b""
            return False
        began = time.perf_counter()
        previous, self._last_data = self._last_data, data
        try:
            snapshot = accept(self.snapshot, data, trust=self.trust, decoder=self._decoder.decode)
        except SnapshotOutdated as exc:
            if self._ahead and exc.revision >= self._stored_revision:
                log.debug("passed over revision %d from %s: a delta ran ahead of it", exc.revision, source)
                self._stored_revision = exc.revision
                self._last_data = previous  # the delta's whole snapshot is still to come
                return False
            self.reject(exc.message, source=source)
            return False
        except SnapshotRejected as exc:
            self.reject(exc.message, source=source)
            return False
        if snapshot.revision >= self.revision:
            self._stored_revision, self._ahead = snapshot.revision, b""
        return self._take(snapshot, data, source=source, began=began, save=save)

    def apply_delta(self, data: bytes) -> bool:
        """Take a delta (``shared.snapshot_delta``) of the applied snapshot, checked as the whole
        snapshot would be (content hash, signature, revision); True when the routing table changed.
        A delta of another snapshot, or one that does not rebuild its content hash, is passed over:
        the whole snapshot follows on the watch."""
        current = self.snapshot
        if current is None:
            return False
        began = time.perf_counter()
        rebuilt = self._decoder.patch(data, base_hash=current.content_hash)
        if rebuilt is None:
            log.debug("passed over a snapshot delta that does not fit revision %d", current.revision)
            return False
        snapshot, whole = rebuilt
        try:
            snapshot = admit(current, snapshot, trust=self.trust)
        except SnapshotRejected as exc:
            self.reject(exc.message, source="delta")
            return False
        if snapshot is current:
            return False
        # The whole snapshot, when the watch brings it, is known at a glance; until then the
        # bus holds an older one, which a re-read or a lagging watch must not report as a refusal.
        self._last_data = self._ahead = whole
        return self._take(snapshot, whole, source="delta", began=began, save=True)

    def _take(self, snapshot: Snapshot, data: bytes, *, source: str, began: float, save: bool) -> bool:
        """Route by ``snapshot`` (accepted from ``data``) from now on; False if it is the one applied."""
        if snapshot is self.snapshot:
            return False
        snapshot, problems, self._opened = open_backends(snapshot, self.keyring, self._opened)
        self.known_secrets.replace(secret_values(_secrets_of(snapshot)))
        self.table = RoutingTable.build(snapshot, previous=self.table, rng=self.rng)
        self.snapshot = snapshot
        self.rejected = False
        self.error = secrets_problem(problems)
        if self.error:
            log.error("snapshot revision %d: %s", snapshot.revision, self.error)
        for listener in self.listeners:
            listener(snapshot)
        log.info(
            "applied snapshot revision %d from %s in %.1f ms",
            snapshot.revision,
            source,
            (time.perf_counter() - began) * 1000,
        )
        if save:
            self._save_soon(data)
        return True

    def reject(self, reason: str, *, source: str) -> None:
        """Keep the applied snapshot and remember why the offered one was refused."""
        self.error = reason
        self.rejected = True
        log.warning("rejected a snapshot from %s, keeping revision %d: %s", source, self.revision, reason)

    def load_cache(self) -> bool:
        """Start from the cached snapshot, if there is a readable one."""
        if self.cache_path is None:
            return False
        try:
            data = self.cache_path.read_bytes()
        except FileNotFoundError:
            return False
        except OSError as exc:
            log.warning("cannot read the snapshot cache %s: %s", self.cache_path, exc)
            return False
        self._restrict_cache()
        return self.apply(data, source=f"cache {self.cache_path}", save=False)

    def _restrict_cache(self) -> None:
        """Make a cache file that others may read (an older version wrote it so) the owner's only."""
        assert self.cache_path is not None
        try:
            if self.cache_path.stat().st_mode & 0o077:
                os.chmod(self.cache_path, 0o600)
                log.warning("the snapshot cache %s was readable by others; now it is not", self.cache_path)
        except OSError as exc:
            log.warning("cannot restrict the snapshot cache %s to its owner: %s", self.cache_path, exc)

    def _save_soon(self, data: bytes) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # applied outside a loop (a tool, a test): written now
            self._save(data)
            return
        if self._save_due is not None:  # a write is due already: it writes this newer revision
            self._save_due = (self._save_due[0], data)
        else:
            self._save_due = (loop.call_later(SAVE_DELAY, self.save_now), data)

    def save_now(self) -> None:
        """Write the disk copy now if a write is pending (at shutdown)."""
        due, self._save_due = self._save_due, None
        if due is not None:
            due[0].cancel()  # no-op when it is the timer calling
            self._save(due[1])

    def _save(self, data: bytes) -> None:
        # Small and rare (once per revision), so written in place on the loop; rename makes it atomic.
        # The bytes are the bus's (backend secrets sealed), and the file is the owner's only all the same.
        if self.cache_path is None:
            return
        tmp = self.cache_path.with_name(f".{self.cache_path.name}.{os.getpid()}.tmp")
        try:
            self.cache_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.fchmod(fd, 0o600)  # a leftover temporary file keeps its old mode through O_CREAT
                with os.fdopen(fd, "wb", closefd=False) as out:
                    out.write(data)
            finally:
                os.close(fd)
            os.replace(tmp, self.cache_path)
        except OSError as exc:
            log.warning("cannot write the snapshot cache %s: %s", self.cache_path, exc)


def _secrets_of(snapshot: Snapshot) -> Iterator[BackendSecrets]:
    for b in snapshot.content.backends:
        if b.bearer_token or b.querystring or b.headers:  # most have none: no object for them
            yield BackendSecrets(bearer_token=b.bearer_token, querystring=b.querystring, headers=b.headers)


def secrets_problem(problems: Mapping[str, str]) -> str:
    """One bounded line for the report: the backends whose secrets could not be opened, by reason."""
    by_reason: dict[str, list[str]] = {}
    for backend, reason in sorted(problems.items()):
        by_reason.setdefault(reason, []).append(backend)
    parts = []
    for reason, backends in by_reason.items():
        shown = ", ".join(f"'{b}'" for b in backends[:_NAMED])
        more = f" and {len(backends) - _NAMED} more" if len(backends) > _NAMED else ""
        parts.append(f"backends {shown}{more} are not used: {reason}")
    return "; ".join(parts)
