"""``dialect="vllm"`` (``ollamaflow sim --format openai --dialect vllm``): the model list says vLLM."""

from __future__ import annotations

import openai
import pytest
from typer.testing import CliRunner

from ollamaflow.cli import app
from ollamaflow.sim import SimConfig, running_sim
from shared.errors import ConfigError


async def test_vllm_dialect_lists_models_as_vllm_does() -> None:
    async with running_sim(format="openai", dialect="vllm", models=("served-model",)) as url:
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        [model] = [m async for m in client.models.list()]
        assert (model.id, model.owned_by) == ("served-model", "vllm")
        assert model.model_extra is not None and model.model_extra["max_model_len"] > 0
        retrieved = await client.models.retrieve("served-model")
        assert retrieved.owned_by == "vllm"
        # Otherwise an OpenAI-compatible server like the default one: chat still answers.
        chat = await client.chat.completions.create(
            model="served-model", messages=[{"role": "user", "content": "hi"}]
        )
        assert chat.choices[0].message.content


async def test_default_openai_mode_is_not_vllm() -> None:
    async with running_sim(format="openai", models=("m",)) as url:
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        [model] = [m async for m in client.models.list()]
        assert model.owned_by != "vllm"
        assert "max_model_len" not in (model.model_extra or {})


def test_the_dialect_needs_the_openai_format() -> None:
    with pytest.raises(ConfigError, match="dialect"):
        SimConfig(format="ollama", dialect="vllm")
    with pytest.raises(ConfigError, match="dialect"):
        SimConfig(format="openai", dialect="sglang")  # type: ignore[arg-type]


def test_cli_rejects_an_unknown_dialect() -> None:
    result = CliRunner().invoke(app, ["sim", "--port", "0", "--format", "openai", "--dialect", "tgi"])
    assert result.exit_code != 0
    assert "--dialect" in result.output
