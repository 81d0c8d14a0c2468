"""The admin API side of ``apply``, ``export`` and ``import``: read the state, carry out a plan.

Everything goes through ``ollamaflow.admin_client``; a failure mid-way stops at once and says which
action failed and which ones were done before it (the API has no transaction across resources).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

from ollamaflow.admin_client import AdminClient, AdminError
from ollamaflow.config_file.model import ClusterSpec
from ollamaflow.config_file.plan import Action, Plan, body

__all__ = ["ApplyError", "carry_out", "read_state"]

_PATHS = {"backend": "/v1.0/backends", "frontend": "/v1.0/frontends"}


class ApplyError(Exception):
    """An action failed after ``done`` actions had succeeded."""

    def __init__(self, message: str, done: int) -> None:
        super().__init__(message)
        self.done = done


def read_state(client: AdminClient) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The control plane's frontends and backends, as it shows them."""
    frontends = client.get(_PATHS["frontend"])
    backends = client.get(_PATHS["backend"])
    if not isinstance(frontends, list) or not isinstance(backends, list):
        raise AdminError("the admin API's frontend or backend list is not a list")
    return frontends, backends


def carry_out(
    client: AdminClient,
    plan: Plan,
    spec: ClusterSpec,
    environ: Mapping[str, str],
    on_done: Callable[[Action], None] = lambda _: None,
) -> None:
    """Each action of the plan in order; ``ApplyError`` at the first that fails."""
    for done, action in enumerate(plan.actions):
        path = _PATHS[action.kind]
        item = f"{path}/{quote(action.identifier, safe='')}"
        try:
            if action.op == "create":
                client.put(path, body(action, spec, environ))
            elif action.op == "update":
                client.request("PATCH", item, body=body(action, spec, environ))
            else:
                client.delete(item)
        except AdminError as exc:
            raise ApplyError(
                f"{action.op} {action.kind} '{action.identifier}' failed ({done} of {len(plan.actions)} "
                f"changes made before it): {exc}",
                done,
            ) from None
        on_done(action)
