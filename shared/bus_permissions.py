"""Who may do what on the bus: the NATS permissions of each role, derived from ``BusNames``.

The one place the allow lists are written. ``ollamaflow up`` renders them into its embedded NATS's
configuration, ``ollamaflow nats-config`` prints them for any namespace, and ``deploy/nats.conf`` is
checked against them by the tests; a name added to ``BusNames`` without a role here fails
``tests/shared/test_bus_permissions.py``.

- ``controlplane``: owns the namespace's JetStream streams (the KV bucket, any key in it: the snapshot,
  its pieces and the control-plane lease), sends snapshot deltas, answers model requests, hears every
  report, asks data planes for routing dry-runs, publishes pull progress, tells the other replicas of
  changes.
- ``dataplane``: reads and watches the KV bucket (no write, create or delete), hears snapshot deltas,
  publishes and hears reports (admission follows its peers), answers routing dry-runs, asks for model
  operations and hears their progress.

Each role gets its own reply-inbox prefix (``BusNames.inbox_prefix``), so a data plane cannot read the
answers meant for the control plane. Replies to requests a role *received* need no publish permission
of their own (``allow_responses``). Anything not listed is denied; NATS has no anonymous user once
users are configured.

Pure: names in, lists out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from shared.bus_names import BusNames

__all__ = ["ROLES", "Role", "RolePermissions", "permissions", "stream_of_bucket"]

Role = Literal["controlplane", "dataplane"]
ROLES: tuple[Role, ...] = ("controlplane", "dataplane")


@dataclass(frozen=True, slots=True)
class RolePermissions:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    allow_responses: bool = True


def stream_of_bucket(bucket: str) -> str:
    """The JetStream stream behind a KV bucket."""
    return f"KV_{bucket}"


def _kv_reader(bucket: str) -> list[str]:
    """What reading, getting and watching a KV bucket sends to JetStream (each entry was found needed
    by a failure without it: e.g. a watch asks for its consumer's info, ordered consumers answer flow
    control on ``$JS.FC``)."""
    stream = stream_of_bucket(bucket)
    return [
        f"$JS.API.STREAM.INFO.{stream}",
        f"$JS.API.STREAM.MSG.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}.>",
        f"$JS.API.CONSUMER.CREATE.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}.>",
        f"$JS.API.CONSUMER.INFO.{stream}.>",
        f"$JS.API.CONSUMER.DELETE.{stream}.>",
        f"$JS.FC.{stream}.>",
    ]


def _kv_owner(bucket: str) -> list[str]:
    """Everything on the bucket's stream (create, update, purge, consumers, acks) and every key."""
    stream = stream_of_bucket(bucket)
    return [
        f"$JS.API.STREAM.*.{stream}",
        f"$JS.API.STREAM.MSG.*.{stream}",
        f"$JS.API.DIRECT.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}.>",
        f"$JS.API.CONSUMER.*.{stream}",
        f"$JS.API.CONSUMER.*.{stream}.>",
        f"$JS.FC.{stream}.>",
        f"$JS.ACK.{stream}.>",
        f"$KV.{bucket}.>",
    ]


# Account-level look-ups the client makes before it finds a stream (no data in them).
_JS_LOOKUPS = ["$JS.API.INFO", "$JS.API.STREAM.NAMES"]


def permissions(names: BusNames, role: Role) -> RolePermissions:
    """The allow lists of ``role`` in the namespace of ``names``."""
    if role == "controlplane":
        return RolePermissions(
            publish=_unique(
                *_JS_LOOKUPS,
                *_kv_owner(names.bucket),
                names.snapshot_delta_subject,
                names.explain_subject,
                names.pulls_subject,
                names.changes_subject,
            ),
            subscribe=_unique(
                f"{names.inbox_prefix(role)}.>",
                names.reports_subject,
                names.models_subject,
                names.changes_subject,
            ),
        )
    if role == "dataplane":
        return RolePermissions(
            publish=_unique(
                *_JS_LOOKUPS,
                *_kv_reader(names.bucket),
                names.reports_subject,
                names.models_subject,
            ),
            subscribe=_unique(
                f"{names.inbox_prefix(role)}.>",
                names.snapshot_delta_subject,
                names.reports_subject,
                names.explain_subject,
                names.pulls_subject,
            ),
        )
    raise ValueError(f"unknown bus role {role!r}")


def _unique(*subjects: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(subjects))
