"""The one error of the cluster-file core."""

from __future__ import annotations

__all__ = ["FileError"]


class FileError(Exception):
    """A file (or what it needs) cannot be used; ``str()`` is one line naming where and why."""
