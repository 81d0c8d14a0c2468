"""The simulator's own control routes (not part of any API it imitates): /_sim/stats, /reset, /config."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from ollamaflow.sim.asgi import ApiError, Request, send_body
from ollamaflow.sim.state import SimState
from shared.errors import ConfigError

__all__ = ["get_config", "reset", "set_config", "stats"]

_encode = msgspec.json.Encoder().encode
_JSON = b"application/json"


class ConfigChange(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    fail_rate: float | None = None
    latency_ms: float | None = None
    tokens_per_second: float | None = None
    fail_mid_stream: bool | None = None
    fail_status: int | None = None
    # Replaces the installed models (and unloads everything).
    models: list[str] | None = None


def _config(state: SimState) -> dict[str, Any]:
    knobs = state.knobs
    return {
        "format": state.config.format,
        "tokens_per_second": knobs.tokens_per_second,
        "latency_ms": knobs.latency_ms,
        "fail_rate": knobs.fail_rate,
        "fail_mid_stream": knobs.fail_mid_stream,
        "fail_status": knobs.fail_status,
        "models": [card.name for card, _ in state.store.installed()],
    }


async def stats(req: Request, state: SimState) -> None:
    await send_body(req.send, 200, _JSON, _encode(state.stats.as_dict()))


async def reset(req: Request, state: SimState) -> None:
    """Back to the start-up state: counters zeroed, knobs and models as configured, nothing loaded."""
    state.reset()
    await send_body(req.send, 200, _JSON, b'{"status":"ok"}')


async def get_config(req: Request, state: SimState) -> None:
    await send_body(req.send, 200, _JSON, _encode(_config(state)))


async def set_config(req: Request, state: SimState) -> None:
    try:
        change = msgspec.json.decode(req.body or b"{}", type=ConfigChange)
    except msgspec.DecodeError as exc:
        raise ApiError(400, str(exc)) from None
    updates = {
        key: value
        for key in ("fail_rate", "latency_ms", "tokens_per_second", "fail_mid_stream", "fail_status")
        if (value := getattr(change, key)) is not None
    }
    try:
        knobs = state.knobs.replace(**updates)
        # SimConfig checks the names (Ollama mode accepts only names Ollama would).
        models = (
            state.config.replace(models=tuple(change.models)).models if change.models is not None else None
        )
    except ConfigError as exc:
        raise ApiError(400, exc.message) from None
    if models is not None:
        state.store.replace_all(models, time.time())
    state.knobs = knobs
    await send_body(req.send, 200, _JSON, _encode(_config(state)))
