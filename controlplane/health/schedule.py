"""PURE: when a backend's next probe is due, at a phase of its own within the interval.

Backends created together (a thousand at start-up, or an import) would otherwise be probed together
every interval: a burst of a thousand probes that delays whatever the control plane does meanwhile
(a publish, an admin write). Each backend's probes fall instead at a fixed offset within the interval
taken from its identifier, so the probes of many backends spread evenly over the interval.
"""

from __future__ import annotations

import hashlib

__all__ = ["next_probe", "phase"]


def phase(ident: str, interval: float) -> float:
    """The backend's offset within ``interval`` (the same for an identifier on every run)."""
    # A real hash: CRC32 bunches sequential identifiers (b00001, b00002, ...) together.
    digest = hashlib.blake2b(ident.encode(), digest_size=8).digest()
    return int.from_bytes(digest) / 2**64 * interval


def next_probe(ident: str, interval: float, now: float) -> float:
    """The first of the backend's slots (``phase + k * interval``) more than half an interval after
    ``now``: the first pause of a new backend is between half and one and a half intervals, then its
    probes come every ``interval`` seconds."""
    if interval <= 0:
        return now
    earliest = now + interval / 2
    offset = phase(ident, interval)
    slots = (earliest - offset) // interval + 1
    return offset + slots * interval
