"""The snapshot this data plane routes by, its routing table, and the copy on disk.

``apply`` is the one way in: it takes snapshot bytes from any source (the bus watch, the periodic
re-read, the disk cache), checks them the same way (content hash, the control plane's signature,
revision), keeps the last good snapshot when the new one is rejected and remembers why,
and swaps the routing table in one assignment, so a request sees either the old table or the new one.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dataplane.routing import RoutingTable
from shared.errors import SnapshotRejected
from shared.signing import SnapshotTrust
from shared.snapshot import Snapshot, accept

__all__ = ["SnapshotState"]

log = logging.getLogger("ollamaflow.dataplane.state")


@dataclass(slots=True, eq=False)
class SnapshotState:
    """The applied snapshot, the routing table built from it, and the last rejection."""

    cache_path: Path | None = None
    # Whose signatures make a snapshot acceptable; the default trusts nobody (accepts nothing).
    trust: SnapshotTrust = field(default_factory=SnapshotTrust)
    rng: random.Random = field(default_factory=random.Random)
    snapshot: Snapshot | None = None
    table: RoutingTable = field(default_factory=RoutingTable)
    # The last snapshot problem (for the report); cleared when a newer snapshot is applied.
    error: str = ""
    # Called with each newly applied snapshot, right after the table swap (e.g. admission's limits).
    listeners: list[Callable[[Snapshot], None]] = field(default_factory=list)
    _last_data: bytes = b""

    @property
    def revision(self) -> int:
        return self.snapshot.revision if self.snapshot is not None else 0

    def apply(self, data: bytes, *, source: str, save: bool = True) -> bool:
        """Take ``data`` if it is newer and sound; True when the routing table changed."""
        if data == self._last_data:  # the periodic re-read mostly sees what the watch already gave
            return False
        self._last_data = data
        try:
            snapshot = accept(self.snapshot, data, trust=self.trust)
        except SnapshotRejected as exc:
            self.error = exc.message
            log.warning(
                "rejected a snapshot from %s, keeping revision %d: %s", source, self.revision, exc.message
            )
            return False
        if snapshot is self.snapshot:
            return False
        self.table = RoutingTable.build(snapshot, previous=self.table, rng=self.rng)
        self.snapshot = snapshot
        self.error = ""
        for listener in self.listeners:
            listener(snapshot)
        log.info("applied snapshot revision %d from %s", snapshot.revision, source)
        if save:
            self._save(data)
        return True

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
        return self.apply(data, source=f"cache {self.cache_path}", save=False)

    def _save(self, data: bytes) -> None:
        # Small and rare (once per revision), so written in place on the loop; rename makes it atomic.
        if self.cache_path is None:
            return
        tmp = self.cache_path.with_name(f".{self.cache_path.name}.{os.getpid()}.tmp")
        try:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
            os.replace(tmp, self.cache_path)
        except OSError as exc:
            log.warning("cannot write the snapshot cache %s: %s", self.cache_path, exc)
