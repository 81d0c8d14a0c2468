"""Who may do what on a frontend: HTTP/1.0, client API keys and their rates, model management, and
route explanations. Checked before a route's handler runs (``DataPlane._http``), in the client's error
format; the settings are the frontend's (all off by default, except ``BlockHttp10``):

- ``BlockHttp10``: an HTTP/1.0 request gets ``505``.
- ``RequireApiKeys``: inference and listing requests need a key valid for the frontend, as
  ``Authorization: Bearer <key>`` or ``X-Api-Key: <key>``; otherwise ``401`` with
  ``WWW-Authenticate: Bearer``. Neither header ever reaches a backend (``dataplane.http.headers``).
- ``AllowModelManagement``: pull, delete, copy, create, push and blobs are refused (``403``) unless
  it is true; with ``ModelManagementRequiresKey`` they also need a key whose ``AllowModelManagement``
  is true (``401`` without a valid key, ``403`` with one that may not).
- A key with a rate limit takes this data plane's part of it (published per data plane in the
  snapshot, else an even split over the listed data planes) from a token bucket: ``429`` with
  ``Retry-After`` once it is used up. Each key's accepted and refused requests are counted for the
  reports (``usage``).
- ``X-OllamaFlow-Explain`` is honoured where ``AllowRouteExplain`` is true, or for a request that
  carries an admin token (``X-OllamaFlow-Admin-Token`` or ``Authorization: Bearer``), compared by
  SHA-256 digest with the ones in the snapshot; otherwise it is ignored.

Keys are looked up by their SHA-256 in a dict built once per snapshot (``refresh``, a listener of the
snapshot state); a frontend without these settings costs the request nothing here.
"""

from __future__ import annotations

import enum
import hmac
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from dataplane.limits.gates import MAX_RETRY_AFTER, TokenBucket
from dataplane.routing.table import FrontendRoute
from dataplane.state import SnapshotState
from shared.credentials import digest
from shared.errors import OllamaFlowError
from shared.snapshot import ApiFormat, ApiKeyView, FrontendView, Snapshot
from shared.wire import ollama, openai
from shared.wire.reports import KeyUsage

__all__ = ["Access", "Guard", "Refusal"]

# Longer than any key we issue (4 + 43 characters): not worth hashing.
_MAX_KEY_LENGTH = 256
_CREDENTIALS = (
    "send 'Authorization: Bearer <key>' or 'X-Api-Key: <key>' with an API key valid for this frontend"
)


class Guard(enum.Enum):
    """What a route asks of the frontend's access settings."""

    PROTOCOL = "protocol"  # only BlockHttp10 (/, /api/version)
    SERVE = "serve"  # inference and listings: an API key where the frontend requires them
    MANAGE = "manage"  # model management: pull, delete, copy, create, push, blobs


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request turned away before its handler, rendered in the client's format."""

    status: int
    message: str
    code: str | None = None  # OpenAI's error code
    headers: tuple[tuple[bytes, bytes], ...] = ()

    def body(self, api_format: ApiFormat) -> bytes:
        if api_format == "OpenAI":
            return openai.error_body(self.message, self.status, code=self.code)
        return ollama.error_body(self.message)


_UNAUTHORIZED = ((b"www-authenticate", b"Bearer"),)


@dataclass(slots=True, eq=False)
class _Key:
    """An active API key as this data plane enforces it."""

    view: ApiKeyView
    frontends: frozenset[str]
    bucket: TokenBucket | None  # None: no rate limit


@dataclass(slots=True)
class _Counts:
    requests: int = 0
    rate_limited: int = 0


@dataclass(slots=True, eq=False)
class _Headers:
    host: bytes = b""
    authorization: bytes = b""
    api_key: bytes = b""
    admin_token: bytes = b""


def _read(raw: Iterable[tuple[bytes, bytes]]) -> _Headers:
    found = _Headers()
    for name, value in raw:
        if name == b"host":
            found.host = value
        elif name == b"authorization":
            found.authorization = value
        elif name == b"x-api-key":
            found.api_key = value
        elif name == b"x-ollamaflow-admin-token":
            found.admin_token = value
    return found


def _bearer(authorization: bytes) -> bytes:
    scheme, _, token = authorization.strip().partition(b" ")
    return token.strip() if scheme.lower() == b"bearer" else b""


class Access:
    """The access checks of one data plane, over the snapshot it applied (touched on the event loop
    only)."""

    def __init__(
        self, dataplane_id: str, state: SnapshotState, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._id = dataplane_id
        self._state = state
        self._clock = clock
        # Whether any active frontend requires API keys: only then do serving routes come here at all.
        self.keys_required = False
        self._keys: dict[str, _Key] = {}  # SHA-256 hex -> key
        self._admin_digests: tuple[bytes, ...] = ()
        self._buckets: dict[str, TokenBucket] = {}  # key id -> its bucket, kept across snapshots
        self._counts: dict[str, _Counts] = {}  # key id -> its use since this process started
        self._applied: Snapshot | None = None

    def refresh(self, snapshot: Snapshot | None) -> None:
        """Take a newly applied snapshot: keys by digest, this plane's part of their rates."""
        if snapshot is None or snapshot is self._applied:
            return
        self._applied = snapshot
        content, now = snapshot.content, self._clock()
        planes = content.cluster.dataplanes
        mine = next((p.key_rates for p in planes if p.id == self._id), {})
        split = sum(1 for p in planes if p.id != self._id) + 1
        keys: dict[str, _Key] = {}
        buckets: dict[str, TokenBucket] = {}
        for view in content.api_keys:
            limit = view.rate_limit_requests_per_second
            bucket = None
            if limit > 0:
                # A zero part still lets the odd request through, about every 1000 s.
                rate = max(mine.get(view.id, limit / split), 0.001)
                bucket = self._buckets.get(view.id)
                if bucket is None:
                    bucket = TokenBucket(rate, now)
                elif bucket.rate != rate:
                    bucket.retune(rate, now)
                buckets[view.id] = bucket
            keys[view.digest] = _Key(view, frozenset(view.frontends), bucket)
        self._keys, self._buckets = keys, buckets
        self._admin_digests = tuple(d.encode() for d in content.cluster.admin_token_digests)
        self.keys_required = any(f.active and f.require_api_keys for f in content.frontends)

    def check(self, raw_headers: Iterable[tuple[bytes, bytes]], guard: Guard, http10: bool) -> Refusal | None:
        """Whether a request for a route with ``guard`` may go on; the refusal if not."""
        headers = _read(raw_headers)
        try:
            route = self._state.table.frontend_for(headers.host.decode("latin-1"))
        except OllamaFlowError:
            return None  # the handler says which frontend is missing
        frontend = route.frontend
        if http10 and frontend.block_http10:
            message = "HTTP/1.0 is not accepted on this frontend (its BlockHttp10 is true): use HTTP/1.1"
            return Refusal(505, message)
        if guard is Guard.MANAGE:
            return self._manage(frontend, headers)
        if guard is Guard.SERVE and frontend.require_api_keys:
            key = self._key(frontend, headers)
            return key if isinstance(key, Refusal) else self._take(key)
        return None

    def explain_allowed(self, route: FrontendRoute, raw_headers: Iterable[tuple[bytes, bytes]]) -> bool:
        """Whether X-OllamaFlow-Explain is honoured: the frontend allows it, or an admin token came."""
        if route.frontend.allow_route_explain:
            return True
        if not self._admin_digests:
            return False
        headers = _read(raw_headers)
        offered = headers.admin_token.strip() or _bearer(headers.authorization)
        if not offered or len(offered) > 4096:
            return False
        mine = digest(offered).encode()
        # Compare with every digest, so the time taken says nothing about which one nearly matched.
        return any([hmac.compare_digest(mine, known) for known in self._admin_digests])

    def usage(self) -> dict[str, KeyUsage]:
        """Key id -> its accepted and rate-limited requests since this process started."""
        return {
            key: KeyUsage(requests=c.requests, rate_limited=c.rate_limited) for key, c in self._counts.items()
        }

    def _manage(self, frontend: FrontendView, headers: _Headers) -> Refusal | None:
        if not frontend.allow_model_management:
            message = "model management is not allowed on this frontend (its AllowModelManagement is false)"
            return Refusal(403, message, "permission_denied")
        if not (frontend.model_management_requires_key or frontend.require_api_keys):
            return None
        key = self._key(frontend, headers, managing=frontend.model_management_requires_key)
        if isinstance(key, Refusal):
            return key
        if frontend.model_management_requires_key and not key.view.allow_model_management:
            message = (
                "this API key may not manage models (its AllowModelManagement is false, and this "
                "frontend's ModelManagementRequiresKey is true)"
            )
            return Refusal(403, message, "permission_denied")
        return self._take(key)

    def _key(self, frontend: FrontendView, headers: _Headers, *, managing: bool = False) -> _Key | Refusal:
        offered = headers.api_key.strip() or _bearer(headers.authorization)
        if not offered:
            setting = "ModelManagementRequiresKey" if managing else "RequireApiKeys"
            message = f"this frontend requires an API key ({setting}): {_CREDENTIALS}"
            return Refusal(401, message, "invalid_api_key", _UNAUTHORIZED)
        key = self._keys.get(digest(offered)) if len(offered) <= _MAX_KEY_LENGTH else None
        if key is None:
            return Refusal(401, f"invalid API key: {_CREDENTIALS}", "invalid_api_key", _UNAUTHORIZED)
        if frontend.id not in key.frontends:
            message = f"this API key is not valid for this frontend: {_CREDENTIALS}"
            return Refusal(401, message, "invalid_api_key", _UNAUTHORIZED)
        return key

    def _take(self, key: _Key) -> Refusal | None:
        """Count the request, and refuse it if the key's rate is used up on this data plane."""
        counts = self._counts.get(key.view.id)
        if counts is None:
            counts = self._counts[key.view.id] = _Counts()
        bucket = key.bucket
        if bucket is None:
            counts.requests += 1
            return None
        now = self._clock()
        if bucket.take(now):
            counts.requests += 1
            return None
        counts.rate_limited += 1
        wait = min(MAX_RETRY_AFTER, max(1, math.ceil(bucket.delay(now))))
        message = (
            f"rate limit of API key '{key.view.id}' exceeded "
            f"({key.view.rate_limit_requests_per_second:g} requests per second); retry after {wait} s"
        )
        return Refusal(429, message, "rate_limit_exceeded", ((b"retry-after", b"%d" % wait),))
