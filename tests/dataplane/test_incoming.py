"""Reading request bodies within the limit, and the routing fields of Ollama bodies."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import pytest

from dataplane.incoming import BadRequest, BodyTooLarge, ClientGone, read_body, read_model_request


def _receiver(*messages: dict[str, Any]):
    queue = list(messages)

    async def receive() -> MutableMapping[str, Any]:
        return queue.pop(0)

    return receive


def _part(body: bytes, more: bool) -> dict[str, Any]:
    return {"type": "http.request", "body": body, "more_body": more}


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


def test_model_request_reads_model_and_stream_only() -> None:
    request = read_model_request(b'{"model":"llama3.2","stream":false,"messages":[{"role":"user"}]}')
    assert (request.model_name, request.stream) == ("llama3.2", False)
    assert read_model_request(b'{"name":"legacy"}').model_name == "legacy"


@pytest.mark.parametrize("body", [b"", b"  \n", b"{", b"[]", b'{"model": 3}', b'{"stream": "yes"}'])
def test_bad_bodies_are_400(body: bytes) -> None:
    with pytest.raises(BadRequest) as caught:
        read_model_request(body)
    assert caught.value.status == 400
