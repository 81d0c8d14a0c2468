"""What went to a client so far: the answer's status, its body bytes, when the first byte went and
its last two chunks (where an answer's token counts are: Ollama's final object, an OpenAI ``usage``).

The metrics, the access log and traces read it once a request ended (``dataplane.observe``); what
sends an answer notes it here as it goes, at no more cost than a few stores per chunk.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from time import perf_counter
from typing import Any

from dataplane.http.responses import Send

__all__ = ["Sent"]


class Sent:
    """The notes of one answer (used on the event loop only)."""

    __slots__ = ("client_gone", "first_at", "last", "previous", "sent", "status")

    # DisconnectGuard.__init__ sets these fields itself (one call less per request): keep both alike.
    def __init__(self) -> None:
        self.status = 0  # 0: no answer head went out (the client left first)
        self.sent = 0  # body bytes
        self.first_at = 0.0  # perf_counter() when the first body byte went; 0.0 if none did
        self.last = b""  # the last body chunk that went out
        self.previous = b""  # the one before it
        self.client_gone = False  # the client went away before the answer ended

    def note(self, message: MutableMapping[str, Any]) -> None:
        """Note an ASGI message on its way to the client."""
        if message["type"] == "http.response.body":
            body = message.get("body", b"")
            if body:
                self.chunk(body)
        elif message["type"] == "http.response.start":
            self.status = message["status"]

    def whole(self, status: int, body: bytes) -> None:
        """Note an answer that goes out in one go: its head, then ``body`` (maybe empty)."""
        self.status = status
        if body:
            self.chunk(body)

    def noting(self, send: Send) -> Send:
        """``send``, noting each message here on its way (answers sent off the usual senders)."""

        async def noted(message: MutableMapping[str, Any]) -> None:
            self.note(message)
            await send(message)

        return noted

    def chunk(self, body: bytes) -> None:
        """Note a body chunk (not empty) on its way to the client."""
        if not self.sent:
            self.first_at = perf_counter()
        self.sent += len(body)
        self.previous = self.last
        self.last = body
