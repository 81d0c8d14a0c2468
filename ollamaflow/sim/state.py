"""The run-time state of one simulator, built at start-up and handed to every route."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ollamaflow.sim.config import Knobs, SimConfig
from ollamaflow.sim.models import ModelCard, ModelStore
from ollamaflow.sim.plan import PlanCache
from ollamaflow.sim.stats import SimStats
from ollamaflow.sim.timing import WallClock

__all__ = ["SimState"]


@dataclass(slots=True)
class SimState:
    config: SimConfig
    knobs: Knobs
    store: ModelStore
    stats: SimStats = field(default_factory=SimStats)
    plans: PlanCache = field(default_factory=PlanCache)
    clock: WallClock = field(default_factory=WallClock)
    # Uploaded blobs (POST /api/blobs/:digest): digest -> size. Local to this server, as in Ollama.
    blobs: dict[str, int] = field(default_factory=dict)
    # Accumulates fail_rate per inference request; a request fails whenever it reaches 1.
    _fail_credit: float = 0.0

    @classmethod
    def create(cls, config: SimConfig) -> SimState:
        store = ModelStore(config.models, ollama=config.format == "ollama", now=time.time())
        return cls(config=config, knobs=config.knobs(), store=store)

    @property
    def ollama(self) -> bool:
        return self.config.format == "ollama"

    def should_fail(self) -> bool:
        rate = self.knobs.fail_rate
        if rate <= 0:
            return False
        self._fail_credit += rate
        if self._fail_credit >= 1.0 - 1e-9:
            self._fail_credit -= 1.0
            self.stats.failures_injected += 1
            return True
        return False

    def find_model(self, name: str) -> ModelCard | None:
        return self.store.find(name)

    def reset(self) -> None:
        """Back to the start-up state: counters, knobs, installed models, no blobs, nothing loaded."""
        self.stats.reset()
        self.knobs = self.config.knobs()
        self.store.replace_all(self.config.models, time.time())
        self.blobs.clear()
        self._fail_credit = 0.0
