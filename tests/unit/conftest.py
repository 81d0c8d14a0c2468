"""Unit tests: pure logic, in-process only. They run without PostgreSQL, NATS or any socket; the
in-memory bus (``shared.memory_bus``) and the ASGI upstream (``tests.support.asgi_upstream``) stand in
where a test needs the planes' I/O seams. A unit test that opens a network socket fails here, so that
one that needs real services is written as an integration test (the other folders under ``tests/``)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

_NETWORK = (socket.AF_INET, socket.AF_INET6)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def refuse(original: Any) -> Any:
        def guarded(self: socket.socket, *args: Any) -> Any:
            if self.family in _NETWORK:
                raise AssertionError("a unit test opened a network socket: make it an integration test")
            return original(self, *args)

        return guarded

    for name in ("connect", "connect_ex", "bind"):
        monkeypatch.setattr(socket.socket, name, refuse(getattr(socket.socket, name)))
    yield
