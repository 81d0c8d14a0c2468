"""`ollamaflow status`: the cluster at a glance (replicas, readiness, data planes, backends, pulls)."""

from __future__ import annotations

from typing import Any

from ollamaflow.commands.admin_io import DataDirOption, Json, Token, Url, emit_json, print_table, session


def status(url: Url = None, token: Token = None, data_dir: DataDirOption = None, json: Json = False) -> None:
    """The cluster at a glance: which control-plane replica answers and which leads, readiness, the
    data planes and the revision each applied, backend health and the pulls under way.

    Backend health and pulls come from the leader: asked of another replica, those lines say whom to
    ask instead. With --json: {"Cluster", "Ready", "Dataplanes", "Backends", "Pulls"}, each the API's
    own answer (or {"Error": ...} where that call failed).
    """
    from ollamaflow.admin_client import AdminError

    parts: dict[str, Any] = {}
    with session(url, token, data_dir) as client:
        parts["Cluster"] = client.get("/v1.0/cluster")  # also proves the token: fail here, not per line
        for name, path in (
            ("Ready", "/readyz"),
            ("Dataplanes", "/v1.0/dataplanes"),
            ("Backends", "/v1.0/backends/health"),
            ("Pulls", "/v1.0/pulls"),
        ):
            try:
                parts[name] = client.get(path)
            except AdminError as exc:
                parts[name] = {"Error": exc.description or str(exc)}
        if json:
            emit_json(parts)
        else:
            print_table(("", "Status"), [(name, _line(name, value)) for name, value in parts.items()])


def _line(name: str, value: Any) -> str:
    if isinstance(value, dict) and "Error" in value:
        return f"unknown: {value['Error']}"
    return {"Cluster": _cluster, "Ready": _ready, "Dataplanes": _dataplanes, "Backends": _backends}.get(
        name, _pulls
    )(value)


def _cluster(c: dict[str, Any]) -> str:
    role = "leader" if c.get("IsLeader") else "follower"
    leader = c.get("Leader") or "nobody (a takeover is under way)"
    where = f" at {c['LeaderAddress']}" if c.get("LeaderAddress") else ""
    return f"replica {c.get('Replica')} ({role}); leader: {leader}{where}"


def _ready(r: dict[str, Any]) -> str:
    return "ready" if r.get("status") == "ok" else f"not ready: {r.get('detail') or r.get('status')}"


def _dataplanes(planes: list[dict[str, Any]]) -> str:
    live = [p for p in planes if p.get("Live")]
    if not planes:
        return "none has reported"
    published = planes[0].get("PublishedRevision", 0)
    behind = [p["Id"] for p in live if p.get("AppliedRevision") != published]
    text = f"{len(live)} live of {len(planes)}; revision {published} published"
    text += f", not yet applied by {', '.join(behind)}" if behind else ", applied by every live one"
    if error := planes[0].get("PublishError"):
        text += f"; publishing fails: {error}"
    return text


def _backends(backends: list[dict[str, Any]]) -> str:
    active = [b for b in backends if b.get("Active")]
    healthy = sum(1 for b in active if b.get("Healthy"))
    text = f"{healthy} healthy, {len(active) - healthy} unhealthy"
    if inactive := len(backends) - len(active):
        text += f", {inactive} inactive"
    return text + f" (of {len(backends)})"


def _pulls(pulls: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for pull in pulls:
        counts[pull.get("State", "?")] = counts.get(pull.get("State", "?"), 0) + 1
    if not pulls:
        return "none"
    return ", ".join(f"{count} {state}" for state, count in sorted(counts.items()))
