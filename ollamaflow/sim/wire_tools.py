"""The tool definition envelope Ollama and OpenAI share: ``{"type": "function", "function": {...}}``."""

from __future__ import annotations

from typing import Any

import msgspec

from ollamaflow.sim.plan import Tool

__all__ = ["FunctionSpec", "ToolSpec", "plan_tools"]


class FunctionSpec(msgspec.Struct, kw_only=True):
    name: str = ""
    description: str | None = None
    parameters: Any = None


class ToolSpec(msgspec.Struct, kw_only=True):
    type: str = "function"
    function: FunctionSpec | None = None


def plan_tools(specs: list[ToolSpec] | None) -> tuple[Tool, ...]:
    if not specs:
        return ()
    return tuple(Tool(spec.function.name, spec.function.parameters) for spec in specs if spec.function)
