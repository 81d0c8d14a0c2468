"""Per-process request counters, read by the reports."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["Traffic"]


@dataclass(slots=True)
class Traffic:
    """Requests in flight per backend, proxied requests in total, those a full queue or an expired
    wait turned away, and clients refused by kind (oversized or late headers, bodies that stopped or
    were too large, connections over the limit...) (touched on the event loop only)."""

    in_flight: Counter[str] = field(default_factory=Counter)
    requests_total: int = 0
    rejected_total: int = 0
    client_errors: Counter[str] = field(default_factory=Counter)

    def started(self, backend_id: str) -> None:
        self.in_flight[backend_id] += 1

    def finished(self, backend_id: str) -> None:
        self.in_flight[backend_id] -= 1
        if self.in_flight[backend_id] <= 0:
            del self.in_flight[backend_id]

    def in_flight_by_backend(self) -> dict[str, int]:
        return dict(self.in_flight)
