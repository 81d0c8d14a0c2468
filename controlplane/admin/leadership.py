"""``/v1.0/cluster``: which control-plane replica answers, and which one leads (holds the lease).

``leader_only`` is how the views of the leader's own observations (backend health, models, pulls)
get the leader's parts: on another replica they answer 503 naming the leader and its admin URL.
"""

from __future__ import annotations

import msgspec
from litestar import get
from litestar.di import NamedDependency

from controlplane.errors import ApiError, error_responses
from controlplane.lease import Lease

__all__ = ["ClusterOut", "cluster_view", "not_leader"]


class ClusterOut(msgspec.Struct, kw_only=True, rename="pascal"):
    """This replica and the lease as it sees it."""

    replica: str
    """The id of the replica that answered."""
    is_leader: bool
    """Whether it holds the lease: it probes, syncs models, publishes and answers model requests."""
    leader: str
    """The id of the replica holding the lease; empty if nobody does (e.g. during a takeover)."""
    leader_address: str
    """The leader's admin URL, as it announces it."""
    leader_since: str
    """When the leader took the lease (RFC 3339)."""
    lease_ttl: float
    """Seconds an unrenewed lease lasts before another replica takes over."""


def cluster_out(lease: Lease) -> ClusterOut:
    leader = lease.leader
    return ClusterOut(
        replica=lease.holder,
        is_leader=lease.is_leader,
        leader=leader.holder if leader is not None else "",
        leader_address=leader.address if leader is not None else "",
        leader_since=leader.since if leader is not None else "",
        lease_ttl=leader.ttl if leader is not None else lease.ttl,
    )


def not_leader(lease: Lease, what: str) -> ApiError:
    """The 503 of a view only the leader can answer."""
    leader = lease.leader
    where = f"the leader, {leader.holder} ({leader.address})" if leader is not None else "the leader"
    held = "; no replica holds the lease right now" if leader is None else ""
    return ApiError(
        "ServiceUnavailable",
        f"{what} is observed by the leading control plane only: this replica ({lease.holder}) does not "
        f"lead{held}. Ask {where}",
    )


@get(
    "/cluster",
    responses=error_responses(401),
    tags=["Cluster"],
    summary="This control-plane replica and the one that leads (probes, syncs models, publishes)",
    sync_to_thread=False,
)
def cluster_view(lease: NamedDependency[Lease]) -> ClusterOut:
    return cluster_out(lease)
