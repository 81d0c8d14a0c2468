"""The admin API side of ``apply``, ``export`` and ``import``: read the state, carry out a plan.

Everything goes through ``ollamaflow.admin_client``; a failure mid-way stops at once and says which
action failed and which ones were done before it (the API has no transaction across resources).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple
from urllib.parse import quote

from ollamaflow.admin_client import AdminClient, AdminError
from ollamaflow.config_file.model import ClusterSpec
from ollamaflow.config_file.plan import Action, Plan, body

__all__ = ["ApplyError", "State", "carry_out", "read_state"]

_PATHS = {"backend": "/v1.0/backends", "frontend": "/v1.0/frontends", "apikey": "/v1.0/apikeys"}


class ApplyError(Exception):
    """An action failed after ``done`` actions had succeeded."""

    def __init__(self, message: str, done: int) -> None:
        super().__init__(message)
        self.done = done


class State(NamedTuple):
    frontends: list[dict[str, Any]]
    backends: list[dict[str, Any]]
    apikeys: list[dict[str, Any]]


def read_state(client: AdminClient) -> State:
    """The control plane's frontends, backends and API keys, as it shows them."""
    lists = [client.get(_PATHS[kind]) for kind in ("frontend", "backend", "apikey")]
    if not all(isinstance(items, list) for items in lists):
        raise AdminError("the admin API's frontend, backend or API key list is not a list")
    return State(*lists)


def carry_out(
    client: AdminClient,
    plan: Plan,
    spec: ClusterSpec,
    environ: Mapping[str, str],
    on_done: Callable[[Action, Any], None] = lambda action, answer: None,
) -> None:
    """Each action of the plan in order, ``on_done`` with the API's answer after each (an API key's
    create answer is the only one to carry the key); ``ApplyError`` at the first that fails."""
    for done, action in enumerate(plan.actions):
        path = _PATHS[action.kind]
        item = f"{path}/{quote(action.identifier, safe='')}"
        try:
            if action.op == "create":
                answer = client.put(path, body(action, spec, environ))
            elif action.op == "update":
                answer = client.request("PATCH", item, body=body(action, spec, environ))
            else:
                answer = client.delete(item)
        except AdminError as exc:
            raise ApplyError(
                f"{action.op} {action.kind} '{action.identifier}' failed ({done} of {len(plan.actions)} "
                f"changes made before it): {exc}",
                done,
            ) from None
        on_done(action, answer)
