"""What each data plane publishes about itself, about once a second."""

from __future__ import annotations

import msgspec

__all__ = ["DataPlaneReport", "KeyUsage", "decode_report", "encode_report"]


class KeyUsage(msgspec.Struct, frozen=True, kw_only=True):
    """One API key's use on one data plane since that process started (counters only ever grow)."""

    requests: int = 0  # requests the key was accepted for
    rate_limited: int = 0  # requests turned away with 429 because the key's rate was used up


class DataPlaneReport(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    applied_revision: int = 0
    # The last snapshot problem, e.g. a rejected revision; empty when all is well.
    snapshot_error: str = ""
    # Where clients reach it (for the admin view); informational only.
    address: str = ""
    version: str = ""
    in_flight: dict[str, int] = {}
    requests_total: int = 0
    started_at: str = ""
    # Passive health: backends this data plane stopped sending to (backend id -> why), until a
    # trial request after a cool-down succeeds.
    ejected: dict[str, str] = {}
    # Load: requests waiting in this data plane's queues that could go to a backend (backend id ->
    # count); with in_flight, the demand the control plane splits each backend's limits by.
    queued: dict[str, int] = {}
    rejected_total: int = 0  # requests turned away because a queue was full or a wait expired
    # Random per process start: counters below restart from zero under a new start id, so the control
    # plane adds what grew under each (start id) and never counts a restart twice.
    start_id: str = ""
    key_usage: dict[str, KeyUsage] = {}  # API key id -> its use here since the start
    # Clients refused since start, by kind: invalid_request, header_too_large, too_many_headers,
    # header_timeout, body_timeout, body_too_large, send_timeout, connection_limit, upgrade, and
    # bad_request (an inference body no backend could parse).
    client_errors: dict[str, int] = {}
    # Graceful stop: it got SIGTERM and takes no new connections; it finishes what it runs (up to its
    # drain timeout). The control plane hands its limit shares to the others at once, leaving it only
    # what it still has in flight or queued.
    draining: bool = False
    # Its last report: it stopped serving, so it is no longer live (no need to wait for the TTL).
    stopped: bool = False


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(DataPlaneReport)


def encode_report(report: DataPlaneReport) -> bytes:
    return _encoder.encode(report)


def decode_report(data: bytes) -> DataPlaneReport:
    return _decoder.decode(data)
