"""Each child's output in a file of its own (``<data-dir>/logs/<name>.log``), appended across restarts
and runs, kept to a bounded size by rotation (the previous file becomes ``<name>.log.1``)."""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

__all__ = ["MAX_LOG_BYTES", "ChildLog"]

MAX_LOG_BYTES = 10 * 1024 * 1024


class ChildLog:
    """Lines to one file; safe to write from several threads (an old and a new process' pump)."""

    def __init__(self, path: Path, *, max_bytes: int = MAX_LOG_BYTES, backups: int = 1) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # The standard library's rotation, used directly: no logger (and no global registry) involved.
        self._handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8", delay=True
        )

    def write(self, line: str) -> None:
        self._handler.handle(logging.makeLogRecord({"msg": line}))

    def close(self) -> None:
        self._handler.close()
