"""Keeping the garbage collector off the long-lived heap.

Both planes hold big, long-lived structures (a thousand backends' rows, views and encodings; the
snapshot and its routing table). Python's full collections walk every tracked object, so each one
paused the loop in proportion to that heap, in the middle of a publish or an apply. ``HeapFreezer``
moves what is alive out of the collector's sight (``gc.freeze``) after start-up and again whenever the
configuration held has doubled since; what is built later is still collected as usual.
"""

from __future__ import annotations

import gc
import logging
import time

__all__ = ["HeapFreezer"]

log = logging.getLogger("ollamaflow.heap")

_GROWTH = 2  # freeze again once the configuration is this many times the size at the last freeze
_FLOOR = 50  # ... and at least this many backends more: small configurations are not worth a pause


class HeapFreezer:
    """Decides when to freeze, by the number of backends the process holds."""

    def __init__(self) -> None:
        self._frozen_at: int | None = None

    def due(self, backends: int) -> bool:
        """Whether holding ``backends`` calls for a freeze (the first call always does)."""
        if self._frozen_at is None:
            return True
        return backends >= max(self._frozen_at * _GROWTH, self._frozen_at + _FLOOR)

    def freeze(self, backends: int) -> None:
        """Collect once, then freeze what survives."""
        self._frozen_at = backends
        began = time.perf_counter()
        gc.collect()
        gc.freeze()
        log.info(
            "froze %d objects (%d backends held) out of the garbage collector's sight in %.1f ms",
            gc.get_freeze_count(),
            backends,
            (time.perf_counter() - began) * 1000,
        )
