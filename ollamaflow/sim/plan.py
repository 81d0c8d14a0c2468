"""What a simulated model will answer to one request, independent of the API format it came in.

Tool calls are deterministic: when the request offers tools and the last message is the user's,
every offered tool whose name the message mentions is called (in the order the tools were given).
OpenAI's ``tool_choice`` can force a call (``required`` calls the first tool when none is named,
``{"function": {"name": ...}}`` calls that one) or forbid it (``none``).
"""

from __future__ import annotations

from typing import Any

import msgspec

from ollamaflow.sim import content

__all__ = ["Ask", "Plan", "PlanCache", "PlannedCall", "Tool", "make_plan"]


class Tool(msgspec.Struct, frozen=True):
    name: str
    parameters: Any = None


class PlannedCall(msgspec.Struct, frozen=True):
    id: str
    name: str
    arguments: dict[str, Any]

    @property
    def arguments_json(self) -> str:
        return msgspec.json.encode(self.arguments).decode()


class Ask(msgspec.Struct, frozen=True, kw_only=True):
    """A request reduced to what decides the answer (hashable unless it carries tools or a schema)."""

    # Everything the model was given, as one text; the answer is derived from it.
    text: str
    prompt_tokens: int
    answer_tokens: int
    # The last message when it is the user's (only then may the model call a tool).
    last_user: str | None = None
    tools: tuple[Tool, ...] = ()
    # None/"auto", "none", "required", or the name of the one tool to call.
    tool_choice: str | None = None
    # Token budget (num_predict / max_tokens); 0 or less = no limit.
    limit: int = 0
    stop: tuple[str, ...] = ()
    # False = free text, True = any JSON object, a dict = a JSON schema to follow.
    json_format: bool | dict[str, Any] = False
    think: bool = False


class Plan(msgspec.Struct, frozen=True):
    thinking: tuple[str, ...]
    content: tuple[str, ...]
    tool_calls: tuple[PlannedCall, ...]
    # "stop" or "length" (tool calls do not change it, as in Ollama).
    done_reason: str
    prompt_tokens: int
    eval_count: int = 0


def _chosen_tools(ask: Ask) -> list[Tool]:
    if not ask.tools or ask.last_user is None or ask.tool_choice == "none":
        return []
    if ask.tool_choice not in (None, "auto", "required"):
        return [tool for tool in ask.tools if tool.name == ask.tool_choice][:1]
    said = ask.last_user.lower()
    named = [tool for tool in ask.tools if tool.name and tool.name.lower() in said]
    if not named and ask.tool_choice == "required":
        return [ask.tools[0]]
    return named


def _cut(pieces: list[str], stop: tuple[str, ...]) -> tuple[list[str], bool]:
    """Cut the pieces where a stop sequence begins (the sequence itself is not emitted)."""
    if not stop:
        return pieces, False
    text = "".join(pieces)
    found = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    if not found:
        return pieces, False
    end, kept, used = min(found), [], 0
    for piece in pieces:
        if used + len(piece) >= end:
            if end > used:
                kept.append(piece[: end - used])
            break
        kept.append(piece)
        used += len(piece)
    return kept, True


def make_plan(ask: Ask) -> Plan:
    thinking = content.thinking_pieces(ask.text) if ask.think else []
    calls = _chosen_tools(ask)
    if calls:
        planned = tuple(
            PlannedCall(
                id=content.tool_call_id(f"{ask.text}\n{index}\n{tool.name}"),
                name=tool.name,
                arguments=content.tool_arguments(tool.parameters, ask.last_user or "", tool.name),
            )
            for index, tool in enumerate(calls)
        )
        tokens = len(thinking) + sum(content.count_tokens(c.arguments_json) + 2 for c in planned)
        return Plan(tuple(thinking), (), planned, "stop", ask.prompt_tokens, tokens)

    if ask.json_format is not False:
        schema = ask.json_format if isinstance(ask.json_format, dict) else None
        pieces = content.split_pieces(content.json_answer(schema, ask.text, ask.answer_tokens))
    else:
        pieces = content.answer_pieces(ask.text, ask.answer_tokens)
    pieces, _stopped = _cut(pieces, ask.stop)
    done_reason = "stop"
    if ask.limit > 0 and len(thinking) + len(pieces) > ask.limit:
        done_reason = "length"
        thinking, pieces = thinking[: ask.limit], pieces[: max(0, ask.limit - len(thinking))]
    return Plan(
        tuple(thinking), tuple(pieces), (), done_reason, ask.prompt_tokens, len(thinking) + len(pieces)
    )


class PlanCache:
    """Remembers plans of plain requests (no tools, no schema): benchmarks repeat their prompts."""

    __slots__ = ("_limit", "_plans")

    def __init__(self, limit: int = 4096) -> None:
        self._plans: dict[Ask, Plan] = {}
        self._limit = limit

    def plan(self, ask: Ask) -> Plan:
        if ask.tools or isinstance(ask.json_format, dict):
            return make_plan(ask)
        plan = self._plans.get(ask)
        if plan is None:
            if len(self._plans) >= self._limit:
                self._plans.clear()
            plan = self._plans[ask] = make_plan(ask)
        return plan
