"""What the benchmark sends, and how its figures are summarised. Pure: no I/O."""

from __future__ import annotations

import msgspec

__all__ = [
    "OPENAI_HOST",
    "PASS_STREAM",
    "SCENARIOS",
    "TRANSLATED",
    "Measured",
    "Scenario",
    "Summary",
    "percentile",
    "summarise",
]

# The Host header that picks the bench's second frontend, whose backend speaks the OpenAI API.
OPENAI_HOST = "openai.bench"


class Scenario(msgspec.Struct, frozen=True, kw_only=True):
    name: str  # short: it is a column of an 80-column table
    path: str
    body: bytes
    # The Host header to send ("": the URL's), which picks the data plane's frontend; only the
    # translated scenarios set it, and a simulator answering directly ignores it.
    host: str = ""


def _chat(stream: bool) -> bytes:
    return msgspec.json.encode(
        {"model": "llama3.2", "messages": [{"role": "user", "content": "Say hello"}], "stream": stream}
    )


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(name="chat", path="/api/chat", body=_chat(False)),
    Scenario(name="chat stream", path="/api/chat", body=_chat(True)),
)
# The pass-through stream the translated ones are compared with.
PASS_STREAM = SCENARIOS[1]

# Streamed chat through the data plane into a backend of the other API, each compared with
# PASS_STREAM's rate in the same round: an Ollama client (/api/chat) whose frontend (OPENAI_HOST)
# holds an OpenAI-format backend, and an OpenAI client (/v1/chat/completions) whose frontend holds
# the Ollama one. Both bodies are the same request in their own API.
TRANSLATED: tuple[Scenario, ...] = (
    Scenario(name="ollama→openai", path="/api/chat", body=_chat(True), host=OPENAI_HOST),
    Scenario(name="openai→ollama", path="/v1/chat/completions", body=_chat(True)),
)


class Summary(msgspec.Struct, frozen=True, kw_only=True):
    """One measured run: answered requests (2xx/3xx, read whole), failures, rate and latency."""

    requests: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float
    first_error: str = ""


class Measured(msgspec.Struct, frozen=True, kw_only=True):
    """A load generator's result: its summary and how many requests the target saw in all.

    ``sent`` counts warm-up requests and failures too, so that CPU time read around the whole run
    divides by the work the target really did.
    """

    summary: Summary
    sent: int


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values (0.0 when there are none)."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, round(fraction * len(sorted_values)) - 1))
    return sorted_values[rank]


def summarise(latencies_ms: list[float], errors: int, elapsed_s: float, first_error: str = "") -> Summary:
    values = sorted(latencies_ms)
    return Summary(
        requests=len(values),
        errors=errors,
        rps=len(values) / elapsed_s if elapsed_s > 0 else 0.0,
        p50_ms=percentile(values, 0.50),
        p99_ms=percentile(values, 0.99),
        first_error=first_error,
    )
