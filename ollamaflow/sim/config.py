"""Settings of one simulator: what it serves and how it misbehaves."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ollamaflow.sim.models import is_valid_ollama_name
from shared.errors import ConfigError

__all__ = ["DEFAULT_MODELS", "Knobs", "SimConfig"]

DEFAULT_MODELS: tuple[str, ...] = ("llama3.2:latest", "qwen2.5:0.5b", "all-minilm:latest")

Format = Literal["ollama", "openai"]
# "vllm" (OpenAI format only): /v1/models says owned_by "vllm" and gives max_model_len, like vLLM.
OpenAIDialect = Literal["", "vllm"]


@dataclass(frozen=True, slots=True)
class Knobs:
    """The behaviour that ``POST /_sim/config`` may change while the simulator runs."""

    # Pause between stream chunks is 1/tokens_per_second; 0 streams as fast as possible.
    tokens_per_second: float = 0.0
    # Pause before the first byte of an inference reply.
    latency_ms: float = 0.0
    # Fraction of inference requests that fail (with fail_status); spread evenly, not at random, so that
    # a test knows exactly which request fails (0.5 = every second one).
    fail_rate: float = 0.0
    # When a failing request streams, fail after half of its chunks instead of before the first byte.
    fail_mid_stream: bool = False
    # Status of injected failures: 500 by default; 503 answers like Ollama's full queue, 429 as
    # rate limiting, so that retry and failover paths can be tested too.
    fail_status: int = 500

    def __post_init__(self) -> None:
        _check(
            self.tokens_per_second >= 0 and math.isfinite(self.tokens_per_second), "tokens_per_second >= 0"
        )
        _check(self.latency_ms >= 0 and math.isfinite(self.latency_ms), "latency_ms >= 0")
        _check(0.0 <= self.fail_rate <= 1.0, "fail_rate between 0 and 1")
        _check(400 <= self.fail_status <= 599, "fail_status between 400 and 599")

    @property
    def token_interval(self) -> float:
        """Seconds between two stream chunks (0 = no pacing)."""
        return 1.0 / self.tokens_per_second if self.tokens_per_second > 0 else 0.0

    def replace(self, **changes: object) -> Knobs:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Everything a simulator needs at start-up.

    ``port`` 0 binds a free port (the in-process runner reports the one it got). Model names are
    served as given; in Ollama mode they are also matched the way Ollama matches them.
    """

    host: str = "127.0.0.1"
    port: int = 0
    format: Format = "ollama"
    dialect: OpenAIDialect = ""
    models: tuple[str, ...] = DEFAULT_MODELS
    tokens_per_second: float = 0.0
    latency_ms: float = 0.0
    fail_rate: float = 0.0
    fail_mid_stream: bool = False
    fail_status: int = 500
    # Length of an answer when nothing cuts it (options.num_predict / max_tokens can).
    answer_tokens: int = 12
    # What GET /api/version reports.
    version: str = "0.33.0"
    # Seconds a model stays in /api/ps after its last use when the request sets no keep_alive.
    keep_alive_s: float = 300.0
    log_level: str = "warning"
    # When set, every API request needs ``Authorization: Bearer <api_key>`` (401 otherwise), like
    # vLLM started with --api-key. Never shown in reprs or logs.
    api_key: str | None = field(default=None, repr=False)
    # Serve https with this certificate chain and key (PEM files), like a backend behind TLS.
    tls_cert: Path | None = None
    tls_key: Path | None = None

    def __post_init__(self) -> None:
        _check(self.format in ("ollama", "openai"), "format 'ollama' or 'openai'")
        _check(self.dialect in ("", "vllm"), "dialect '' or 'vllm'")
        _check(not self.dialect or self.format == "openai", "dialect only with format 'openai'")
        _check(0 <= self.port <= 65535, "port between 0 and 65535")
        _check(self.answer_tokens >= 1, "answer_tokens >= 1")
        _check((self.tls_cert is None) == (self.tls_key is None), "tls_cert and tls_key together")
        _check(all(name.strip() for name in self.models), "model names must not be empty")
        object.__setattr__(self, "models", tuple(name.strip() for name in self.models))
        if self.format == "ollama":
            bad = [name for name in self.models if not is_valid_ollama_name(name)]
            _check(not bad, f"valid Ollama model names, not {bad}")
        self.knobs()  # validates the run-time knobs too

    def knobs(self) -> Knobs:
        return Knobs(
            tokens_per_second=self.tokens_per_second,
            latency_ms=self.latency_ms,
            fail_rate=self.fail_rate,
            fail_mid_stream=self.fail_mid_stream,
            fail_status=self.fail_status,
        )

    def replace(self, **changes: object) -> SimConfig:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def _check(ok: bool, expectation: str) -> None:
    if not ok:
        raise ConfigError(f"simulator setting out of range: expected {expectation}")
