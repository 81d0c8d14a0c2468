"""Simulators served in-process over real loopback HTTP, one per test so their state is fresh."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ollamaflow.sim import SimConfig, running_sim


@pytest.fixture
async def ollama_url() -> AsyncIterator[str]:
    async with running_sim(SimConfig()) as url:
        yield url


@pytest.fixture
async def openai_url() -> AsyncIterator[str]:
    async with running_sim(SimConfig(format="openai")) as url:
        yield url
