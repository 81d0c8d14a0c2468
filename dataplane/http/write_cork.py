"""One send for an answer's head and body: the transport a client's response cycle writes through.

uvicorn writes a response's head when the app sends ``http.response.start`` and its body on each
``http.response.body``: two ``send`` system calls for a small whole answer, where one would do. The
system calls are most of what a proxied request costs the data plane, so ``Cork`` holds the first
write of each response (armed per request) until the next write, which goes out joined with it, or
until the event loop's next turn, whichever comes first. A streamed answer's head thus waits at most
one loop turn for its first chunk; a whole answer leaves in one piece.

Order is kept whatever is held: every write of the cycle goes through the cork, and what it holds
always goes out before what comes after (``close`` and ``write_eof`` flush it first; ``abort`` drops
it with the connection, as the kernel would have).
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["Cork"]

# Above this a held head and a body go out in two writes rather than one joined copy.
_JOIN_LIMIT = 65536


class Cork:
    """Stands in for the client's transport in uvicorn's response cycle (see the module doc)."""

    __slots__ = ("_armed", "_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._armed = False

    def arm(self) -> None:
        """Hold the next write (a response's head) until the write after it or the next loop turn."""
        self._armed = True

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if len(data) < _JOIN_LIMIT:
                self._transport.write(held + data)
            else:
                self._transport.write(held)
                self._transport.write(data)
        elif self._armed:
            self._armed = False
            self._held = data
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        """Write what is held now (nothing when the next write already took it)."""
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        # Everything else (is_closing, get_extra_info, pause_reading, ...) is the transport's.
        return getattr(self._transport, name)
