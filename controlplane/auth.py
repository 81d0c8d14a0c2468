"""Admin authentication: ``Authorization: Bearer <token>`` against the configured admin tokens.

Guards are coroutine functions: Litestar runs a plain function guard in a worker thread, a hop there and
back on every request for a check that takes microseconds (``on_loop`` makes one of a plain function).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.types import Guard

from controlplane.errors import ApiError

__all__ = ["admin_guard", "bearer_token", "on_loop"]


def bearer_token(authorization: str) -> str | None:
    """The token of a ``Bearer`` authorization header value, or None."""
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def admin_guard(tokens: Sequence[str]) -> Guard:
    """A guard that lets a request through only with one of ``tokens`` (compared in constant time)."""
    accepted = tuple(t.encode() for t in tokens)
    if not accepted:
        raise ValueError("at least one admin token is required")

    async def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        token = bearer_token(connection.headers.get("authorization", ""))
        offered = (token or "").encode()
        # Compare against every token so the time taken says nothing about which one nearly matched.
        matches = [hmac.compare_digest(offered, candidate) for candidate in accepted]
        if token is None or not any(matches):
            raise ApiError(
                "AuthenticationFailed", "send a valid admin token as 'Authorization: Bearer <token>'"
            )

    return guard


def on_loop(guard: Callable[[ASGIConnection, BaseRouteHandler], None]) -> Guard:
    """``guard`` (a plain function that neither blocks nor awaits) run on the event loop, not in a
    worker thread."""

    async def on_the_loop(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
        guard(connection, handler)

    return on_the_loop
