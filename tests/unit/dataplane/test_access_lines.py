"""Access lines are formatted a batch at a time, their label fields quoted once per combination; these
prove the batches are byte for byte the lines formatted one at a time as before, in text and JSON,
for any fields, times and repeats of label combinations."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dataplane.observe.access_log import LEVEL, LOGGER, AccessLine, AccessLog, millis

_encoder = msgspec.json.Encoder()


def _one_at_a_time(entry: AccessLine, now: float, json: bool) -> str:
    """A line as it was formatted before batches: one per request, each value quoted on its own."""
    second = int(now)
    if json:
        entry.time = (
            f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(second))}.{int((now - second) * 1000):03d}Z"
        )
        return _encoder.encode(entry).decode()
    stamp = f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(second))},{int((now - second) * 1000):03d}"

    def shown(value: str) -> str:
        if not value or " " in value or '"' in value or "=" in value or "\n" in value:
            return _encoder.encode(value).decode()
        return value

    def number(value: float | None) -> str:
        return "-" if value is None else str(value)

    return (
        f"{stamp} INFO ollamaflow.access: {entry.message} request_id={entry.request_id or '-'} "
        f"frontend={shown(entry.frontend)} backend={shown(entry.backend)} "
        f"model={shown(entry.model)} endpoint={shown(entry.endpoint)} "
        f"client_format={entry.client_format} status={entry.status} bytes={entry.bytes} "
        f"duration_ms={entry.duration_ms} ttfb_ms={number(entry.ttfb_ms)} "
        f"input_tokens={number(entry.input_tokens)} output_tokens={number(entry.output_tokens)} "
        f"retries={entry.retries} queue_ms={number(entry.queue_ms)} relay={entry.relay} "
        f"client_gone={entry.client_gone}"
    )


_names = st.one_of(
    st.sampled_from(["none", "fe-1", "be 2", 'a"b', "x=y", "", "line\nbreak"]), st.text(max_size=30)
)
_millis = st.floats(0, 10**6, allow_nan=False).map(lambda seconds: millis(seconds / 1000))
_counts = st.integers(1, 10**12)


@st.composite
def _entries(draw: st.DrawFn) -> AccessLine:
    labels = draw(
        st.sampled_from(draw(st.lists(st.tuples(_names, _names, _names, _names), min_size=1, max_size=3)))
    )
    return AccessLine(
        "",
        LEVEL,
        LOGGER,
        draw(st.text(max_size=40)),
        draw(st.one_of(st.none(), st.text(max_size=40))),
        *labels,
        draw(st.sampled_from(["ollama", "openai"])),
        draw(st.integers(0, 599)),
        draw(st.integers(0, 2**40)),
        draw(_millis),
        draw(st.one_of(st.none(), _millis)),
        draw(st.one_of(st.none(), _counts)),
        draw(st.one_of(st.none(), _counts)),
        draw(st.integers(0, 20)),
        draw(st.one_of(st.none(), _millis)),
        draw(st.sampled_from(["passthrough", "translated", "local", "none"])),
        draw(st.booleans()),
    )


class _Batches(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.batches.append(record.getMessage())


@pytest.fixture(scope="module")
def batches() -> Iterator[list[str]]:
    handler = _Batches()
    logger = logging.getLogger(LOGGER)
    old = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield handler.batches
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old[0])
        logger.propagate = old[1]


@given(
    entries=st.lists(_entries(), min_size=1, max_size=40),
    start=st.floats(0, 4 * 10**9, allow_nan=False),
    steps=st.lists(st.floats(0, 2, allow_nan=False), min_size=40, max_size=40),
    json=st.booleans(),
    batch=st.integers(1, 7),
)
def test_batched_lines_are_the_lines_formatted_one_at_a_time(
    batches: list[str],
    entries: list[AccessLine],
    start: float,
    steps: list[float],
    json: bool,
    batch: int,
) -> None:
    times = [start + sum(steps[:i]) for i in range(len(entries))]
    copies = [msgspec.structs.replace(entry) for entry in entries]  # the JSON line sets their time
    expected = [_one_at_a_time(copy, now, json) for copy, now in zip(copies, times, strict=True)]
    clock = iter(times)

    async def log() -> None:
        log = AccessLog("json" if json else "text", clock=lambda: next(clock))
        for at, entry in enumerate(entries, 1):
            log.write(entry)
            if at % batch == 0:
                log.flush()  # as the timer does
        log.flush()

    batches.clear()
    asyncio.run(log())
    assert "\n".join(batches) == "\n".join(expected)
    assert len(batches) == -(-len(entries) // batch)
