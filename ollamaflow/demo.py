"""The configuration ``ollamaflow up --demo`` puts in through the admin API: one backend per simulator
and a catch-all frontend over them. Written so that running it again updates instead of failing (the
simulators get new ports on every run)."""

from __future__ import annotations

from typing import Any

import httpx

__all__ = ["DEMO_FRONTEND", "DemoError", "configure_demo", "demo_backend_id", "demo_revision"]

DEMO_FRONTEND = "demo"


class DemoError(Exception):
    """The admin API refused the demo configuration."""


def demo_backend_id(index: int) -> str:
    return f"demo-sim-{index}"


def configure_demo(admin: httpx.Client, sim_ports: list[int], *, host: str = "127.0.0.1") -> None:
    """Create or replace the demo backends (simulators at ``host:port``) and the demo frontend."""
    backend_ids = []
    for index, port in enumerate(sim_ports, start=1):
        identifier = demo_backend_id(index)
        backend_ids.append(identifier)
        _create_or_replace(
            admin,
            "/v1.0/backends",
            {
                "Identifier": identifier,
                "Name": f"Demo simulator {index}",
                "Hostname": host,
                "Port": port,
                "Ssl": False,
                "ApiFormat": "Ollama",
            },
        )
    _create_or_replace(
        admin,
        "/v1.0/frontends",
        {
            "Identifier": DEMO_FRONTEND,
            "Name": "Demo (all simulators)",
            "Hostname": "*",
            "LoadBalancing": "RoundRobin",
            "Backends": backend_ids,
        },
    )


def _create_or_replace(admin: httpx.Client, collection: str, body: dict[str, Any]) -> None:
    """PUT to the collection creates (201); when the item exists (409) PUT to the item replaces it."""
    response = admin.put(collection, json=body)
    if response.status_code == 409:
        replaced = admin.put(f"{collection}/{body['Identifier']}", json=body)
        # 404: the 409 was not the Identifier's (another frontend has Hostname "*"); that one says why.
        response = response if replaced.status_code == 404 else replaced
    if response.status_code >= 400:
        raise DemoError(
            f"PUT {collection} {body['Identifier']}: HTTP {response.status_code} {response.text[:300]}"
        )


def demo_revision(snapshot: dict[str, Any], sim_ports: list[int], *, host: str = "127.0.0.1") -> int | None:
    """The revision of ``snapshot`` (as ``GET /v1.0/snapshot`` shows it) if it already routes the demo
    frontend to these simulators, else None: the admin API answers before the snapshot is published."""
    content = snapshot.get("Content") or {}
    frontends = {f.get("id"): f for f in content.get("frontends", ())}
    backends = {b.get("id"): b for b in content.get("backends", ())}
    wanted = [demo_backend_id(i) for i in range(1, len(sim_ports) + 1)]
    demo = frontends.get(DEMO_FRONTEND)
    if demo is None or list(demo.get("backends", ())) != wanted:
        return None
    for identifier, port in zip(wanted, sim_ports, strict=True):
        if (backends.get(identifier) or {}).get("base_url") != f"http://{host}:{port}":
            return None
    revision = snapshot.get("Revision")
    return revision if isinstance(revision, int) else None
