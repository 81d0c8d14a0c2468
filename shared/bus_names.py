"""Every NATS subject, bucket and key name the planes use, derived from one namespace.

``shared.bus`` uses them; ``shared.bus_permissions`` gives each its role (a name added here needs its
role there). A ``namespace`` other than the default keeps test runs and side-by-side clusters apart on
one server.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.snapshot import SCHEMA_MAJOR

__all__ = ["DEFAULT_NAMESPACE", "BusNames"]

DEFAULT_NAMESPACE = "ollamaflow"


@dataclass(frozen=True, slots=True)
class BusNames:
    namespace: str = DEFAULT_NAMESPACE

    @property
    def bucket(self) -> str:
        return self.namespace

    @property
    def snapshot_key(self) -> str:
        return f"snapshot.v{SCHEMA_MAJOR}"

    def snapshot_piece_key(self, revision: int, index: int) -> str:
        """The KV key of one piece of a snapshot too large for one message."""
        return f"{self.snapshot_key}.{revision}.{index}"

    @property
    def snapshot_pieces_keys(self) -> str:
        """A KV key wildcard matching every snapshot piece (and nothing else)."""
        return f"{self.snapshot_key}.>"

    @property
    def bucket_stream(self) -> str:
        """The JetStream stream that holds the KV bucket (NATS names it so)."""
        return f"KV_{self.bucket}"

    def bucket_subject(self, key: str) -> str:
        """The subject a KV key (or key wildcard) of the bucket is stored under."""
        return f"$KV.{self.bucket}.{key}"

    @property
    def snapshot_delta_subject(self) -> str:
        """Where the control plane sends each snapshot as its changes (``shared.snapshot_delta``) just
        before it stores the whole one under ``snapshot_key``."""
        return f"{self.namespace}.snapshot.v{SCHEMA_MAJOR}.delta"

    @property
    def reports_subject(self) -> str:
        return f"{self.namespace}.reports.dataplane"

    @property
    def explain_subject(self) -> str:
        return f"{self.namespace}.dataplane.explain"

    @property
    def models_subject(self) -> str:
        return f"{self.namespace}.controlplane.models"

    @property
    def pulls_subject(self) -> str:
        return f"{self.namespace}.pulls.progress"

    @property
    def lease_key(self) -> str:
        return "lease.controlplane"

    @property
    def changes_subject(self) -> str:
        return f"{self.namespace}.controlplane.changed"

    def inbox_prefix(self, role: str) -> str:
        """Where a plane of ``role`` receives its replies: one prefix per role, so that the bus's
        permissions (``shared.bus_permissions``) keep each role's answers from the other."""
        return f"_INBOX.{self.namespace}.{role}"
