"""The streams' text chunks are encoded around the text from bytes built once; these prove they are
byte for byte what the general path (dicts through the JSON encoder) gives, for any model and text."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dataplane.translate.framing import ndjson_line
from dataplane.translate.ollama_on_openai import _Shape
from dataplane.translate.openai_on_ollama import OpenAIStream

_texts = st.text(min_size=1)


@given(model=st.text(), text=_texts, chat=st.booleans(), now_ns=st.integers(0, 2**62))
def test_an_ollama_text_line_is_the_general_line(model: str, text: str, chat: bool, now_ns: int) -> None:
    shape = _Shape(model, chat)
    assert shape.text_line(now_ns, text) == ndjson_line(shape.line(now_ns, text))


@given(model=st.text(), text=_texts, chat=st.booleans(), usage=st.booleans(), created=st.integers(0, 2**40))
def test_an_openai_text_chunk_is_the_general_chunk(
    model: str, text: str, chat: bool, usage: bool, created: int
) -> None:
    stream = OpenAIStream(
        model=model, chat=chat, id="chatcmpl-1", created=created, include_usage=usage, ids=lambda p: p
    )
    general = stream._chunk(stream._choice({"content": text} if chat else text))
    assert stream._text_chunk(text) == general
