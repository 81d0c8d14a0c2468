"""Choosing the load generator: wrk when it is on PATH (or asked for), else Python processes."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from ollamaflow.bench.loadgen import run_python
from ollamaflow.bench.scenarios import Measured, Scenario
from ollamaflow.bench.wrk import run_wrk, wrk_path, wrk_version

__all__ = ["GeneratorChoice", "LoadGenerator", "choose"]

GeneratorChoice = Literal["auto", "wrk", "python"]


@dataclass(frozen=True, slots=True)
class LoadGenerator:
    """A load generator, ready to drive one scenario at one base URL."""

    name: str  # what ran, for the report: "wrk 4.1.0, 1 thread" or "python, 2 processes"
    drive: Callable[[str, Scenario], Measured]


def choose(
    choice: GeneratorChoice, *, connections: int, duration_s: float, warmup_s: float, processes: int = 0
) -> LoadGenerator:
    """``processes`` is for the Python generator only (0 = one per core)."""
    wrk = wrk_path() if choice in ("auto", "wrk") else None
    if choice == "wrk" and wrk is None:
        raise RuntimeError(
            "wrk is not on PATH (install it, e.g. apt-get install wrk, or use --generator python)"
        )
    if wrk is not None:
        found = re.search(r"\d+(\.\d+)+", wrk_version(wrk))
        seconds = max(1, math.ceil(duration_s))
        return LoadGenerator(
            name=f"wrk {found.group() if found else '?'} (1 thread, {seconds} s runs)",
            drive=lambda url, scenario: run_wrk(
                wrk,
                url + scenario.path,
                scenario.body,
                connections=connections,
                duration_s=duration_s,
                warmup_s=warmup_s,
                host=scenario.host,
            ),
        )
    count = max(1, min(processes or os.cpu_count() or 1, connections))
    return LoadGenerator(
        name=f"python/aiohttp ({count} process{'es' if count > 1 else ''})",
        drive=lambda url, scenario: run_python(
            url + scenario.path,
            scenario.body,
            connections=connections,
            duration_s=duration_s,
            warmup_s=warmup_s,
            processes=count,
            host=scenario.host,
        ),
    )
