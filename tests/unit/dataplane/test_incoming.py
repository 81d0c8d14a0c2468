"""Reading request bodies within the limit and in time, and the routing fields of Ollama bodies."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import MutableMapping
from typing import Any

import pytest

from dataplane.http.incoming import (
    BadRequest,
    BodyReader,
    BodyTimeout,
    BodyTooLarge,
    ClientGone,
    frontend_limit,
    read_model_request,
)


def _receiver(*messages: dict[str, Any]):
    queue = list(messages)

    async def receive() -> MutableMapping[str, Any]:
        return queue.pop(0)

    return receive


def _part(body: bytes, more: bool) -> dict[str, Any]:
    return {"type": "http.request", "body": body, "more_body": more}


def reader(
    errors: Counter[str] | None = None, *, max_json: int = 1 << 20, piece_timeout: float = 30.0
) -> BodyReader:
    return BodyReader(max_json=max_json, piece_timeout=piece_timeout, errors=errors)


async def read_body(receive: Any, declared: int | None, limit: int) -> bytes:
    return await reader().whole(receive, declared, frontend_limit(limit))


async def test_body_in_one_message_or_many() -> None:
    assert await read_body(_receiver(_part(b"abc", False)), 3, 10) == b"abc"
    parts = _receiver(_part(b"ab", True), _part(b"cd", True), _part(b"e", False))
    assert await read_body(parts, None, 10) == b"abcde"


async def test_declared_size_over_the_limit_is_refused_unread() -> None:
    with pytest.raises(BodyTooLarge) as caught:
        await read_body(_receiver(), 11, 10)
    assert caught.value.status == 413


async def test_actual_size_over_the_limit_is_refused() -> None:
    with pytest.raises(BodyTooLarge):
        await read_body(_receiver(_part(b"123456", True), _part(b"123456", False)), None, 10)
    with pytest.raises(BodyTooLarge):
        await read_body(_receiver(_part(b"x" * 11, False)), None, 10)


async def test_disconnect_while_reading() -> None:
    with pytest.raises(ClientGone):
        await read_body(_receiver(_part(b"ab", True), {"type": "http.disconnect"}), None, 10)


async def test_json_bodies_get_the_tighter_of_the_two_limits_named_in_the_refusal() -> None:
    errors: Counter[str] = Counter()
    capped = reader(errors, max_json=10)
    with pytest.raises(BodyTooLarge) as json_cap:
        await capped.json(_receiver(), 11, 1000)
    assert "limit of 10 bytes" in json_cap.value.message
    assert "OLLAMAFLOW_MAX_JSON_BODY" in json_cap.value.message
    with pytest.raises(BodyTooLarge) as frontend_cap:
        await capped.json(_receiver(_part(b"x" * 6, True), _part(b"x" * 6, False)), None, 8)
    assert "limit of 8 bytes" in frontend_cap.value.message
    assert "MaxRequestBodySize" in frontend_cap.value.message
    assert errors == {"body_too_large": 2}


async def test_a_body_that_stops_coming_is_a_408_and_counted() -> None:
    errors: Counter[str] = Counter()
    stalled = reader(errors, piece_timeout=0.2)
    more = asyncio.Event()

    async def stalls_after_one_piece() -> MutableMapping[str, Any]:
        if more.is_set():
            await asyncio.sleep(3600)
        more.set()
        return _part(b"ab", True)

    with pytest.raises(BodyTimeout) as caught:
        await asyncio.wait_for(stalled.whole(stalls_after_one_piece, None, frontend_limit(10)), 5)
    assert caught.value.status == 408
    assert errors == {"body_timeout": 1}
    # The same for a streamed body, and the task itself is not left cancelled.
    more.clear()
    with pytest.raises(BodyTimeout):
        async for _ in stalled.stream(stalls_after_one_piece, None, frontend_limit(10)):
            pass
    assert errors == {"body_timeout": 2}
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_pieces_that_keep_coming_are_waited_for() -> None:
    # The whole body takes 1.2 s, more than the piece timeout; each piece comes 0.15 s after the last,
    # far below it, so a busy machine (CI's two cores) stalling the loop for a while does not fail it.
    steady = reader(piece_timeout=1.0)
    pieces = [_part(b"a", True)] * 7 + [_part(b"b", False)]

    async def slow_but_steady() -> MutableMapping[str, Any]:
        await asyncio.sleep(0.15)
        return pieces.pop(0)

    assert await steady.whole(slow_but_steady, None, frontend_limit(100)) == b"aaaaaaab"


def test_model_request_reads_model_and_stream_only() -> None:
    request = read_model_request(b'{"model":"llama3.2","stream":false,"messages":[{"role":"user"}]}')
    assert (request.model_name, request.stream) == ("llama3.2", False)
    assert read_model_request(b'{"name":"legacy"}').model_name == "legacy"


@pytest.mark.parametrize("body", [b"", b"  \n", b"{", b"[]", b'{"model": 3}', b'{"stream": "yes"}'])
def test_bad_bodies_are_400(body: bytes) -> None:
    with pytest.raises(BadRequest) as caught:
        read_model_request(body)
    assert caught.value.status == 400
