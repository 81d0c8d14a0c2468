"""The contract suite runs once per upstream client: the builtin one and the aiohttp reference."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from dataplane.upstream.aiohttp_client import AiohttpUpstream
from dataplane.upstream.builtin import Upstream
from dataplane.upstream.transport import Transport

MakeTransport = Callable[..., Awaitable[Transport]]

CLIENTS = {"builtin": Upstream, "aiohttp": AiohttpUpstream}


@pytest.fixture(params=sorted(CLIENTS))
def client_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_transport(client_kind: str) -> AsyncIterator[MakeTransport]:
    """Build and start a transport of this run's kind; all are closed after the test."""
    made: list[Transport] = []

    async def make(
        *,
        connect_timeout: float = 2.0,
        max_connections: int = 8,
        ssl_context: ssl.SSLContext | None = None,
        idle_expiry: float = 30.0,
    ) -> Transport:
        transport = CLIENTS[client_kind](
            connect_timeout=connect_timeout,
            max_connections=max_connections,
            ssl_context=ssl_context,
            idle_expiry=idle_expiry,
        )
        await transport.start()
        made.append(transport)
        return transport

    yield make
    for transport in made:
        await transport.close()


@pytest.fixture
async def transport(make_transport: MakeTransport) -> Transport:
    return await make_transport()
