"""What only the builtin client promises beyond the contract: it runs on uvloop as in production, and a
handle uvloop closed under it is a closed connection."""

from __future__ import annotations

import asyncio

import pytest

from dataplane.upstream.builtin import Upstream
from dataplane.upstream.http1 import Connection
from dataplane.upstream.transport import Disconnected
from tests.dataplane.transport.servers import keep_alive_ok, request_head, scripted


def test_the_client_runs_on_uvloop_as_in_production() -> None:
    """uvloop's transports differ from asyncio's (the data plane process runs on uvloop)."""
    uvloop = pytest.importorskip("uvloop")

    async def main() -> tuple[list[bytes], int]:
        client = Upstream(connect_timeout=2.0, max_connections=8)
        await client.start()
        bodies = []
        try:
            async with scripted(keep_alive_ok) as server:
                for _ in range(3):
                    origin, head = request_head(server.url, b"{}")
                    response = await client.request("b1", origin, head, b"{}", 5.0)
                    bodies.extend([c async for c in response.iter_chunks()])
                    response.release()
        finally:
            await client.close()
        return bodies, server.connections

    bodies, connections = uvloop.run(main())
    assert bodies == [b'{"ok":true}'] * 3
    assert connections == 1


class _ResetHandle(asyncio.Transport):
    """A transport as uvloop leaves it when the backend's reset closed the handle before
    connection_lost ran: writing raises RuntimeError."""

    def __init__(self) -> None:
        super().__init__()
        self.aborted = False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default

    def is_closing(self) -> bool:
        return False  # not yet told

    def write(self, data: bytes | bytearray | memoryview) -> None:
        raise RuntimeError("unable to perform operation on <TCPTransport closed=True>; the handler is closed")

    def abort(self) -> None:
        self.aborted = True


async def test_a_write_on_a_handle_the_backend_reset_is_a_closed_connection_not_a_crash() -> None:
    """Seen under load when a backend died: the answer was a 500 from an unhandled RuntimeError, now
    it is a closed connection, which the proxy tries on another backend."""
    conn = Connection(asyncio.get_running_loop(), on_idle=lambda _c: None, on_lost=lambda _c: None)
    transport = _ResetHandle()
    conn.connection_made(transport)
    with pytest.raises(Disconnected):
        await conn.request(b"POST /api/generate HTTP/1.1\r\nHost: b\r\n\r\n", b"{}", 5.0)
    assert transport.aborted and not conn.usable
