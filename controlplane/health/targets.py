"""PURE: what the monitor needs of one backend row, and how its requests are addressed.

A backend's Authorization (BearerToken), Querystring and Headers go on every probe, inventory read
and pull, exactly as the data plane applies them to proxied requests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from controlplane.health.state import Thresholds
from controlplane.publish.builder import backend_base_url

__all__ = ["BackendTarget", "TargetRecord", "target_of"]


class TargetRecord(Protocol):
    identifier: str
    hostname: str
    port: int
    ssl: bool
    api_format: str
    active: bool
    healthy_threshold: int
    unhealthy_threshold: int
    health_check_method: str
    health_check_url: str
    health_check_interval_ms: int | None
    health_check_timeout_ms: int | None
    bearer_token: str | None
    querystring: str | None
    headers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class BackendTarget:
    """One backend as the monitor sees it."""

    id: str
    base_url: str
    api_format: str
    active: bool
    method: str
    health_path: str
    thresholds: Thresholds
    headers: tuple[tuple[str, str], ...] = ()
    querystring: str = ""
    interval: float | None = None
    """Seconds between probes; None: the monitor's default."""
    timeout: float | None = None
    """Seconds a probe may take; None: the monitor's default."""

    def url(self, path: str) -> str:
        """``base_url + path`` with the backend's querystring appended."""
        return self.base_url + self.path(path)

    def path(self, path: str) -> str:
        """``path`` with the backend's querystring appended (a request target)."""
        if self.querystring:
            path += ("&" if "?" in path else "?") + self.querystring
        return path

    def probe_identity(self) -> tuple[object, ...]:
        """What a probe depends on: when it changes the probe restarts and the health is unknown."""
        return (self.base_url, self.method, self.health_path, self.headers, self.querystring)

    @property
    def ollama(self) -> bool:
        return self.api_format == "Ollama"


def _headers(token: str | None, extra: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    items: Sequence[tuple[str, str]] = list(extra.items())
    if token:
        items = [(k, v) for k, v in items if k.lower() != "authorization"]
        items.append(("Authorization", f"Bearer {token}"))
    return tuple(items)


def target_of(row: TargetRecord) -> BackendTarget:
    return BackendTarget(
        id=row.identifier,
        base_url=backend_base_url(row.hostname, row.port, row.ssl),
        api_format=row.api_format,
        active=row.active,
        method=row.health_check_method,
        health_path=row.health_check_url or "/",
        thresholds=Thresholds(healthy=row.healthy_threshold, unhealthy=row.unhealthy_threshold),
        headers=_headers(row.bearer_token, row.headers),
        querystring=(row.querystring or "").lstrip("?"),
        interval=row.health_check_interval_ms / 1000 if row.health_check_interval_ms else None,
        timeout=row.health_check_timeout_ms / 1000 if row.health_check_timeout_ms else None,
    )
