"""A plan for people (rich colours: green create, yellow update, red delete) or for scripts (JSON).

Secret values never appear: a plan holds only their shape (``BearerToken`` true or false, header and
parameter values ``"<redacted>"``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.markup import escape

from ollamaflow.config_file.plan import Action, Plan

__all__ = ["plan_json", "print_done", "print_plan", "summary"]

_MARK = {"create": ("+", "green"), "update": ("~", "yellow"), "delete": ("-", "red")}
_LONGEST = 80


def _short(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        text = json.dumps(value)
    elif isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, separators=(",", ":"), sort_keys=False)
    return text if len(text) <= _LONGEST else text[: _LONGEST - 1] + "…"


def _shown(name: str, value: Any) -> str:
    if name == "BearerToken":  # the plan holds whether there is one, never the token
        return "set" if value else "none"
    return _short(value)


def _fields(action: Action) -> str:
    if action.op == "delete":
        return ""
    if action.op == "create":
        parts = [
            f"{name}={_shown(name, value)}" for name, value in action.changes.items() if name != "Identifier"
        ]
    else:
        parts = [
            f"{name}: {_shown(name, old)} → {_shown(name, new)}"
            for name, (old, new) in action.changes.items()
        ]
    parts += [f"{name}: resent from the environment" for name in action.resent]
    return "; ".join(parts)


def summary(plan: Plan) -> dict[str, int]:
    counts = Counter(action.op for action in plan.actions)
    return {op: counts.get(op, 0) for op in ("create", "update", "delete")}


def print_plan(console: Console, plan: Plan, *, source: str, target: str, dry_run: bool) -> None:
    """The plan, one line per change; a dry run's ends with the count (a real one's once it is done,
    ``print_done``)."""
    if plan.empty:
        console.print(f"No changes: {escape(target)} already matches {escape(source)}.")
        return
    head = "Would change" if dry_run else "Changing"
    console.print(f"{head} {escape(target)} to match {escape(source)}:")
    for action in plan.actions:
        mark, colour = _MARK[action.op]
        details = _fields(action)
        name = escape(action.identifier)
        line = f"  [{colour}]{mark} {action.op} {action.kind} [bold]{name}[/bold][/{colour}]"
        console.print(line + (f"  {escape(details)}" if details else ""), soft_wrap=True)
    if dry_run:
        console.print(_count(plan, "to make") + " Nothing was changed (--dry-run).")


def print_done(console: Console, plan: Plan) -> None:
    if not plan.empty:
        console.print(_count(plan, "made"))


def _count(plan: Plan, verb: str) -> str:
    counts = summary(plan)
    total = len(plan.actions)
    return (
        f"{total} change{'s' if total != 1 else ''} {verb}: {counts['create']} create, "
        f"{counts['update']} update, {counts['delete']} delete."
    )


def plan_json(
    plan: Plan,
    *,
    source: str,
    target: str,
    dry_run: bool,
    applied: int,
    keys: Mapping[str, str] | None = None,
) -> str:
    """The plan for scripts; ``keys``: the API keys created, by identifier (each entry gets its
    ``key``, shown only then)."""
    actions = []
    for action in plan.actions:
        entry: dict[str, Any] = {"op": action.op, "kind": action.kind, "identifier": action.identifier}
        if action.op == "create":
            entry["fields"] = action.changes
            if action.kind == "apikey" and keys and action.identifier in keys:
                entry["key"] = keys[action.identifier]
        elif action.op == "update":
            entry["fields"] = {name: {"from": old, "to": new} for name, (old, new) in action.changes.items()}
            if action.resent:
                entry["resent"] = list(action.resent)
        actions.append(entry)
    return json.dumps(
        {
            "source": source,
            "target": target,
            "dry_run": dry_run,
            "changed": applied > 0,
            "summary": summary(plan),
            "applied": applied,
            "actions": actions,
        },
        indent=2,
    )
