"""Counters a test reads through ``GET /_sim/stats``: traffic, concurrency, injected faults."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["SimStats"]


@dataclass(slots=True)
class SimStats:
    requests_total: int = 0
    # Inference requests (generate, chat, embed, OpenAI completions/embeddings) being answered now.
    in_flight: int = 0
    peak_concurrent: int = 0
    by_path: dict[str, int] = field(default_factory=dict)
    failures_injected: int = 0
    # Inference replies cut short because the client went away.
    disconnects: int = 0
    # Stream chunks that carried generated text or a tool call.
    chunks_sent: int = 0

    def count_request(self, path: str) -> None:
        self.requests_total += 1
        self.by_path[path] = self.by_path.get(path, 0) + 1

    def enter(self) -> None:
        self.in_flight += 1
        if self.in_flight > self.peak_concurrent:
            self.peak_concurrent = self.in_flight

    def leave(self) -> None:
        self.in_flight -= 1

    def reset(self) -> None:
        """Zero the counters; requests still running stay counted as in flight."""
        self.requests_total = 0
        self.peak_concurrent = self.in_flight
        self.by_path = {}
        self.failures_injected = 0
        self.disconnects = 0
        self.chunks_sent = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests_total": self.requests_total,
            "in_flight": self.in_flight,
            "peak_concurrent": self.peak_concurrent,
            "by_path": dict(self.by_path),
            "failures_injected": self.failures_injected,
            "disconnects": self.disconnects,
            "chunks_sent": self.chunks_sent,
        }
