"""The deterministic "model output" and the answer plan, without sockets."""

from __future__ import annotations

import base64
import math
import struct

import pytest

from ollamaflow.sim import content
from ollamaflow.sim.models import ModelStore, card_for, is_valid_ollama_name, ollama_key
from ollamaflow.sim.plan import Ask, PlanCache, Tool, make_plan

WEATHER = Tool(
    "get_weather",
    {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city"],
    },
)


def test_answers_are_deterministic_sentences() -> None:
    pieces = content.answer_pieces("Say hello", 12)
    assert pieces == content.answer_pieces("Say hello", 12)
    assert pieces != content.answer_pieces("Say goodbye", 12)
    assert len(pieces) == 12
    assert pieces[0][0].isupper() and pieces[-1].endswith(".")
    assert all(piece.startswith(" ") for piece in pieces[1:])


def test_embeddings_are_unit_vectors_and_dimensions_truncate() -> None:
    full = content.embedding("hello", 384)
    assert len(full) == 384
    assert math.isclose(math.fsum(v * v for v in full), 1.0, rel_tol=1e-9)
    short = content.embedding("hello", 8)
    head = full[:8]
    norm = math.sqrt(math.fsum(v * v for v in head))
    assert short == pytest.approx([v / norm for v in head])
    assert content.embedding("hello", 8) != content.embedding("world", 8)


def test_base64_embeddings_are_little_endian_float32() -> None:
    vector = content.embedding("x", 16)
    decoded = struct.unpack("<16f", base64.b64decode(content.embedding_base64(vector)))
    assert decoded == pytest.approx(vector, abs=1e-6)


def test_tool_arguments_follow_the_schema_and_the_message() -> None:
    args = content.tool_arguments(WEATHER.parameters, "What is the weather in Paris? Use get_weather")
    assert args == {"city": "Paris"}
    every = content.tool_arguments(
        {"type": "object", "properties": {"n": {"type": "integer"}, "ok": {}}}, "a b c"
    )
    assert set(every) == {"n", "ok"} and every["n"] == 3
    assert content.value_for_schema({"enum": ["C", "F"]}, "x") == "C"


def test_tool_call_ids_look_like_ollamas() -> None:
    call_id = content.tool_call_id("seed")
    assert call_id.startswith("call_") and len(call_id) == 13 and call_id == content.tool_call_id("seed")


def _ask(**fields: object) -> Ask:
    defaults: dict[str, object] = {"text": "hi", "prompt_tokens": 5, "answer_tokens": 12}
    return Ask(**{**defaults, **fields})  # type: ignore[arg-type]


def test_plan_length_and_num_predict() -> None:
    plan = make_plan(_ask())
    assert len(plan.content) == 12 and plan.done_reason == "stop" and plan.eval_count == 12
    cut = make_plan(_ask(limit=5))
    assert cut.content == plan.content[:5] and cut.done_reason == "length" and cut.eval_count == 5
    assert make_plan(_ask(limit=50)).done_reason == "stop"


def test_plan_stop_sequences_cut_without_the_sequence() -> None:
    full = "".join(make_plan(_ask()).content)
    stop = full.split(" ")[3]
    plan = make_plan(_ask(stop=(" " + stop,)))
    text = "".join(plan.content)
    assert plan.done_reason == "stop" and full.startswith(text) and stop not in text.split(" ")[3:]


def test_plan_calls_the_tools_the_user_names() -> None:
    other = Tool("get_time", {"type": "object", "properties": {}})
    plan = make_plan(_ask(last_user="weather in Oslo? get_weather please", tools=(other, WEATHER)))
    assert [call.name for call in plan.tool_calls] == ["get_weather"]
    assert plan.tool_calls[0].arguments == {"city": "Oslo"} and plan.content == ()
    both = make_plan(_ask(last_user="get_time and get_weather for Rome", tools=(other, WEATHER)))
    assert [call.name for call in both.tool_calls] == ["get_time", "get_weather"]
    assert make_plan(_ask(last_user="just chat", tools=(WEATHER,))).tool_calls == ()
    # A tool result as the last message gets a text answer, so agent loops end.
    assert make_plan(_ask(last_user=None, tools=(WEATHER,))).tool_calls == ()


def test_tool_choice_forces_or_forbids() -> None:
    other = Tool("get_time")
    assert (
        make_plan(_ask(last_user="x", tools=(WEATHER,), tool_choice="required")).tool_calls[0].name
        == "get_weather"
    )
    assert make_plan(_ask(last_user="get_weather", tools=(WEATHER,), tool_choice="none")).tool_calls == ()
    forced = make_plan(_ask(last_user="get_weather", tools=(WEATHER, other), tool_choice="get_time"))
    assert [call.name for call in forced.tool_calls] == ["get_time"]


def test_json_format_answers_parse() -> None:
    import json

    assert "answer" in json.loads("".join(make_plan(_ask(json_format=True)).content))
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}}
    assert set(json.loads("".join(make_plan(_ask(json_format=schema)).content))) == {"name", "age"}


def test_thinking_comes_first_and_counts_against_the_limit() -> None:
    plan = make_plan(_ask(think=True))
    assert plan.thinking and plan.eval_count == len(plan.thinking) + len(plan.content)
    cut = make_plan(_ask(think=True, limit=3))
    assert len(cut.thinking) == 3 and cut.content == () and cut.done_reason == "length"


def test_plan_cache_returns_equal_plans() -> None:
    cache = PlanCache(limit=2)
    for text in ("a", "b", "c", "a"):
        assert cache.plan(_ask(text=text)) == make_plan(_ask(text=text))
    assert cache.plan(_ask(last_user="get_weather", tools=(WEATHER,))).tool_calls


def test_ollama_names() -> None:
    assert (
        ollama_key("Llama3.2")
        == ollama_key("llama3.2:latest")
        == ollama_key("registry.ollama.ai/library/llama3.2")
    )
    assert ollama_key("qwen2.5:0.5b") != ollama_key("qwen2.5")
    assert is_valid_ollama_name("user/model:tag") and is_valid_ollama_name("host:5000/ns/model")
    assert not is_valid_ollama_name("bad name") and not is_valid_ollama_name("")


def test_model_cards() -> None:
    assert card_for("all-minilm:latest").capabilities == ("embedding",)
    assert card_for("nomic-embed-text").embedding
    assert card_for("llama3.2:latest").capabilities == ("completion", "tools")
    assert "thinking" in card_for("qwen3:4b").capabilities
    assert card_for("qwen2.5:0.5b").parameter_size == "0.5B"
    assert card_for("x").digest == card_for("x").digest and len(card_for("x").digest) == 64


def test_model_store_load_and_expiry() -> None:
    store = ModelStore(("llama3.2",), ollama=True, now=0.0)
    card = store.find("LLAMA3.2:latest")
    assert card is not None and card.name == "llama3.2:latest"
    assert store.keep_loaded(card, 10, now=100.0) is False
    assert store.keep_loaded(card, 10, now=105.0) is True
    assert [loaded.card.name for loaded in store.running(now=114.0)] == ["llama3.2:latest"]
    assert store.running(now=116.0) == []
    store.keep_loaded(card, -1, now=200.0)
    assert store.running(now=1e9)
    store.keep_loaded(card, 0, now=300.0)
    assert store.running(now=300.0) == []
    openai = ModelStore(("llama3.2:latest",), ollama=False, now=0.0)
    assert openai.find("llama3.2") is None and openai.find("llama3.2:latest") is not None
