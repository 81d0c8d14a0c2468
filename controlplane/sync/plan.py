"""PURE: which models each backend must pull (or may delete), and the state of one pull.

Names are compared as Ollama compares them (``shared.models.model_key``), so ``llama3`` is satisfied
by ``llama3:latest`` but not by ``llama3:8b``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

from shared.models import model_key

__all__ = [
    "PullJob",
    "PullState",
    "RequiredFrontend",
    "missing_models",
    "required_by_backend",
    "unrequired_models",
    "worth_restarting",
]

PullState = Literal["queued", "pulling", "retrying", "done", "failed"]


class RequiredFrontend(Protocol):
    backends: Sequence[str]
    required_models: Sequence[str]


def required_by_backend(frontends: Iterable[RequiredFrontend]) -> dict[str, tuple[str, ...]]:
    """Backend id -> the models its frontends require (first spelling of each, in order)."""
    required: dict[str, dict[str, str]] = {}
    for frontend in frontends:
        for backend in frontend.backends:
            models = required.setdefault(backend, {})
            for name in frontend.required_models:
                if name.strip():
                    models.setdefault(model_key(name), name.strip())
    return {backend: tuple(models.values()) for backend, models in required.items() if models}


def missing_models(required: Sequence[str], present: Iterable[str]) -> tuple[str, ...]:
    """The required names the backend does not have."""
    have = {model_key(name) for name in present}
    return tuple(name for name in required if model_key(name) not in have)


def unrequired_models(required: Sequence[str], present: Iterable[str]) -> tuple[str, ...]:
    """The models present that nothing requires."""
    need = {model_key(name) for name in required}
    return tuple(name for name in present if model_key(name) not in need)


@dataclass(slots=True)
class PullJob:
    """One model being brought onto one backend."""

    backend: str
    model: str
    state: PullState = "queued"
    status: str = ""
    """The backend's last progress status line (e.g. "pulling 6a0746a1ec1a")."""
    layers: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Layer digest -> (completed, total) bytes."""
    attempts: int = 0
    error: str = ""
    created: datetime | None = None
    updated: datetime | None = None
    next_attempt: datetime | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.backend, model_key(self.model))

    @property
    def completed(self) -> int:
        return sum(done for done, _ in self.layers.values())

    @property
    def total(self) -> int:
        return sum(total for _, total in self.layers.values())

    def progress(self, line: Mapping[str, object]) -> None:
        """Take one NDJSON progress line of Ollama's /api/pull."""
        status = line.get("status")
        if isinstance(status, str):
            self.status = status
        digest, total, done = line.get("digest"), line.get("total"), line.get("completed", 0)
        if isinstance(digest, str) and isinstance(total, int) and isinstance(done, int):
            self.layers[digest] = (min(done, total), total)


def worth_restarting(job: PullJob, healthy_since: datetime | None, listed_at: datetime | None) -> bool:
    """Whether a finished job (no task running) starts again now that its model is missing.

    Yes if it had succeeded and a model list read after that lacks the model (it went away since),
    or if it failed for good but its backend has become healthy again since (the failures may have
    been the outage). ``listed_at``: when the backend's model list was last read.
    """
    if job.updated is None:
        return False
    if job.state == "done":
        return listed_at is not None and listed_at > job.updated
    return job.state == "failed" and healthy_since is not None and job.updated < healthy_since
