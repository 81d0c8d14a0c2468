"""What only the builtin client promises beyond the contract: it runs on uvloop as in production."""

from __future__ import annotations

import pytest

from dataplane.upstream import Upstream
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
