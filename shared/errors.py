"""The exception tree shared by both planes.

    OllamaFlowError
    ├── ConfigError              bad settings; the process should not start
    ├── SnapshotRejected         a snapshot a data plane will not apply (keeps its last good one)
    ├── BusError                 NATS unreachable or a bucket operation failed
    │   ├── SnapshotConflict     another writer stored a snapshot first (compare-and-set lost)
    │   └── LeaseConflict        another control plane wrote the lease first (compare-and-set lost)
    ├── RoutingError             the request cannot be placed           (status: 4xx/5xx to the client)
    │   ├── NoFrontendMatch      no frontend for the Host header         404
    │   ├── RequestNotAllowed    the frontend forbids this request type  403
    │   └── NoBackendAvailable   no eligible backend                     502
    └── UpstreamError            the chosen backend failed               502/504
        ├── UpstreamUnavailable  connect refused/reset, DNS              502
        ├── UpstreamTimeout      no answer in time                       504
        └── UpstreamProtocolError  an answer we could not read           502

Each RoutingError/UpstreamError carries the HTTP ``status`` the client should see; the route turns it
into the error shape of the client's API format.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "BusAuthError",
    "BusError",
    "BusNoResponder",
    "ConfigError",
    "LeaseConflict",
    "NoBackendAvailable",
    "NoFrontendMatch",
    "OllamaFlowError",
    "RequestNotAllowed",
    "RoutingError",
    "SnapshotConflict",
    "SnapshotOutdated",
    "SnapshotRejected",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
]


class OllamaFlowError(Exception):
    """Base of every error OllamaFlow raises on purpose."""

    status: int = 500
    # Headers its answer carries besides the error body (e.g. Retry-After, Connection: close).
    headers: Sequence[tuple[bytes, bytes]] = ()

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.message = message  # what a client may be told
        self.detail = detail  # what only the log says: addresses, OS and library errors

    @property
    def logged(self) -> str:
        """The message with its detail, for the log."""
        return f"{self.message} ({self.detail})" if self.detail else self.message


class ConfigError(OllamaFlowError):
    pass


class SnapshotRejected(OllamaFlowError):
    pass


class SnapshotOutdated(SnapshotRejected):
    """A sound snapshot older than the one applied (``revision``: its own)."""

    def __init__(self, message: str, revision: int) -> None:
        super().__init__(message)
        self.revision = revision


class BusError(OllamaFlowError):
    status = 503


class SnapshotConflict(BusError):
    pass


class LeaseConflict(BusError):
    pass


class BusAuthError(BusError):
    """NATS refused the plane's credentials (wrong user or password, or none given)."""


class BusNoResponder(BusError):
    """A request on the bus found nobody serving its subject (e.g. no control plane running)."""


class RoutingError(OllamaFlowError):
    status = 502


class NoFrontendMatch(RoutingError):
    status = 404


class RequestNotAllowed(RoutingError):
    status = 403


class NoBackendAvailable(RoutingError):
    status = 502


class UpstreamError(OllamaFlowError):
    status = 502


class UpstreamUnavailable(UpstreamError):
    status = 502


class UpstreamTimeout(UpstreamError):
    status = 504


class UpstreamProtocolError(UpstreamError):
    status = 502
