"""The answer to one proxied request's client, and the moment it is finishing.

A client that leaves cancels its request, unless the answer's last message is being written
("finishing", ``DisconnectGuard.finishing``): then nothing is left to cancel, and a drain that ends
requests leaves it to finish too. Every last message of a proxied answer goes out through ``finish``
(or the helpers built on it), so that flag is set in this one place; ``dataplane.drain.end_answer``
sets it for the answers the drain ends. Error answers take the client's API format.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from dataplane.drain import end_answer
from dataplane.http.disconnect import DisconnectGuard
from dataplane.http.responses import JSON, Send, error_bytes, whole_answer
from dataplane.limits.gates import QueueRejected
from dataplane.translate.common import LocalReply
from dataplane.translate.errors import Untranslatable
from shared.errors import OllamaFlowError, UpstreamError
from shared.snapshot import ApiFormat

__all__ = ["ClientStream"]

Headers = list[tuple[bytes, bytes]]


class ClientStream:
    """``send`` to the client, the request's ``DisconnectGuard`` that notes what went out (the relays
    note a stream's chunks there themselves: ``dataplane.http.sent``), and the client's API format."""

    __slots__ = ("api_format", "guard", "send")

    def __init__(self, send: Send, guard: DisconnectGuard, api_format: ApiFormat) -> None:
        self.send = send
        self.guard = guard
        self.api_format = api_format

    async def finish(self, *messages: MutableMapping[str, Any]) -> None:
        """Send ``messages``, the answer's last: a client leaving from now on changes nothing."""
        guard = self.guard
        guard.finishing = True
        for message in messages:
            guard.note(message)
            await self.send(message)

    async def whole(self, status: int, body: bytes, content_type: bytes, headers: Headers) -> None:
        """An answer in one message: the head, then its body as the last message."""
        await self.finish_whole(*whole_answer(status, body, content_type, headers))

    async def finish_whole(self, start: MutableMapping[str, Any], end: MutableMapping[str, Any]) -> None:
        """Send ``start``, an answer's head, then ``end``, its whole body, as its last message."""
        guard = self.guard
        guard.finishing = True
        guard.whole(start["status"], end["body"])
        await self.send(start)
        await self.send(end)

    async def local(self, reply: LocalReply, headers: Headers) -> None:
        """An answer the translation gives without a backend (e.g. Ollama's empty load request)."""
        await self.whole(reply.status, reply.body, reply.content_type.encode(), headers)

    async def rejected(self, exc: QueueRejected, headers: Headers) -> None:
        """A full queue or an expired wait: 429/503 with Retry-After."""
        status, body, retry_after = exc.response(self.api_format)
        await self.whole(status, body, JSON, [*headers, retry_after])

    async def failure(self, exc: OllamaFlowError, request_id: str, headers: Headers) -> None:
        """``exc`` (raised before the answer began) as the client's error answer."""
        if isinstance(exc, Untranslatable):
            body = exc.openai_body() if self.api_format == "OpenAI" else exc.ollama_body()
        elif isinstance(exc, UpstreamError):  # the details are in the log, under the request id
            body = error_bytes(self.api_format, exc.status, f"{exc.message} (request {request_id})")
        else:
            body = error_bytes(self.api_format, exc.status, exc.message)
            headers = [*headers, *exc.headers]
        await self.whole(exc.status, body, JSON, headers)

    async def drained(self, message: str, headers: Headers) -> None:
        """The drain timeout ended the request: end what went out so far in the client's format."""
        await end_answer(self.guard.noting(self.send), self.guard, self.api_format, message, headers)
