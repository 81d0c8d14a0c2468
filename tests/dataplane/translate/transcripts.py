"""Helpers for golden transcripts: fixture files, awkward chunking, deterministic ids and times."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "translate"

# 2025-05-01T10:00:00Z: when the request started; the backend answers 1.5 s later.
STARTED_NS = 1_746_093_600_000_000_000
NOW_NS = STARTED_NS + 1_500_000_000
CREATED = 1_746_093_600

# Chunk sizes to feed a stream with: every byte, an odd size that splits mid-JSON, all at once.
STEPS = (1, 7, 1_000_000)


def chunks(data: bytes, step: int) -> list[bytes]:
    return [data[i : i + step] for i in range(0, len(data), step)]


def counting_ids() -> Callable[[str], str]:
    """An id source that numbers ids: ``call_001``, ``chatcmpl-002``, ..."""
    numbers = itertools.count(1)
    return lambda prefix: f"{prefix}{next(numbers):03d}"


def golden(path: Path, produced: bytes) -> bytes:
    """The expected bytes stored at ``path``; ``UPDATE_GOLDEN=1`` rewrites them from ``produced``."""
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_bytes(produced)
    return path.read_bytes()
