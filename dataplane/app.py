"""The data plane as a raw ASGI application: requests go to their route's handler, and the lifespan
starts and stops the parts.

The parts are built in ``dataplane.parts`` and the route table in ``dataplane.routes``. Here a request
finds its route, passes the route's access checks (only when they can refuse something), and runs its
handler, where a drain can end it if the route's answers may take a while.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from dataplane.drain import Answer, drained_message, end_answer
from dataplane.http.cors import request_origin
from dataplane.http.incoming import Receive
from dataplane.http.paths import BLOB_PREFIX, MODEL_PREFIX, raw_path
from dataplane.http.request_context import new_id_header, running_task
from dataplane.http.responses import JSON, Send, send_bytes, send_error
from dataplane.limits.access import Guard
from dataplane.observe.request_log import UNLOGGED_PATHS, LoggedAnswer
from dataplane.parts import DataPlaneParts
from dataplane.routes import Route, route_table
from dataplane.settings import DataPlaneSettings
from dataplane.upstream.transport import Transport
from shared.bus import Bus
from shared.heap import HeapFreezer
from shared.snapshot import Snapshot

__all__ = ["DataPlane", "create_app"]

log = logging.getLogger("ollamaflow.dataplane")


class DataPlane(DataPlaneParts):
    """The ASGI callable. Built once at start-up; its parts (``DataPlaneParts``) hang off it."""

    def __init__(
        self, settings: DataPlaneSettings, *, bus: Bus | None = None, upstream: Transport | None = None
    ) -> None:
        """``bus`` and ``upstream`` replace the ones the settings name (tests: the in-memory bus,
        simulators called in-process)."""
        super().__init__(settings, bus=bus, upstream=upstream)
        self._heap = HeapFreezer()
        self._freeze_pending = False
        self.state.listeners.append(self._freeze_soon)
        self._routes = route_table(self)
        self._sync_task: asyncio.Task[None] | None = None
        self._explain_task: asyncio.Task[None] | None = None
        self._metrics_server: asyncio.Server | None = None
        # How long start-up waits for a first snapshot before the server listens (0: not at all). A
        # worker of ``ollamaflow dataplane --workers`` waits: its port already answers through the
        # other workers, and connections meant for it wait in its socket rather than get a 404.
        self.snapshot_wait = 0.0

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            cors = self.cors
            if cors is not None and (origin := request_origin(scope["headers"])) is not None:
                await cors.handle(scope, receive, send, origin, self._http)
                return
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        # The raw path: a percent-encoded "/" or "." must not reach another route (dataplane.http.paths).
        path = raw_path(scope)
        route = self._routes.get(path)
        if route is None and len(path) > 1 and path.endswith("/"):
            route = self._routes.get(path[:-1])
        if route is None and path.startswith(MODEL_PREFIX):
            route = self._routes[MODEL_PREFIX]
        if route is None and path.startswith(BLOB_PREFIX):
            route = self._routes[BLOB_PREFIX]  # its handler accepts only a well-formed digest
        # The proxy logs the requests it handles (dataplane.observe.request_log); the rest are logged here.
        logged = None if route is not None and route.own_answer else self._logged(path, route, scope, send)
        if logged is None:
            await self._dispatch(path, route, scope, receive, send)
            return
        try:
            await self._dispatch(path, route, scope, receive, logged)
        finally:
            logged.done()

    def _logged(
        self, path: str, route: Route | None, scope: MutableMapping[str, Any], send: Send
    ) -> LoggedAnswer | None:
        """``send`` wrapped to write an access-log line, or None where nothing is logged."""
        access_log = self.access_log
        if access_log is None or not access_log.enabled or path in UNLOGGED_PATHS:
            return None
        logged = LoggedAnswer(access_log, send, scope["method"], path, scope["headers"])
        if route is not None:
            logged.speaking(route.api_format)
        return logged

    async def _dispatch(
        self, path: str, route: Route | None, scope: MutableMapping[str, Any], receive: Receive, send: Send
    ) -> None:
        if route is None:
            shown = path if len(path) <= 200 else path[:200] + "..."
            await send_error(send, "Ollama", 404, f"no route for {shown}")
        elif scope["method"] not in route.methods:
            allow = ", ".join(sorted(route.methods)).encode()
            await self._before_handler(
                path,
                route,
                scope,
                send,
                lambda out: send_error(out, route.api_format, 405, "method not allowed", [(b"allow", allow)]),
            )
        else:
            guard = route.guard
            if guard is not None and (
                guard is Guard.MANAGE
                or (guard is Guard.SERVE and self.access.keys_required)
                or scope["http_version"] == "1.0"
            ):
                refusal = self.access.check(scope["headers"], guard, scope["http_version"] == "1.0")
                if refusal is not None:
                    id_header = new_id_header()
                    body = refusal.body(route.api_format)
                    headers = [id_header, *refusal.headers]
                    await self._before_handler(
                        path,
                        route,
                        scope,
                        send,
                        lambda out: send_bytes(out, refusal.status, body, JSON, headers),
                    )
                    return
            if route.endable:
                await self._endable(route, scope, receive, send)
            else:
                await route.handler(scope, receive, send)

    async def _before_handler(
        self,
        path: str,
        route: Route,
        scope: MutableMapping[str, Any],
        send: Send,
        answer: Callable[[Send], Awaitable[None]],
    ) -> None:
        """Give ``answer`` before the route's handler runs: logged here for the proxy's routes, which
        log only what reaches them (other routes' ``send`` is already logged)."""
        logged = self._logged(path, route, scope, send) if route.own_answer else None
        await answer(logged or send)
        if logged is not None:
            logged.done()

    async def _endable(
        self, route: Route, scope: MutableMapping[str, Any], receive: Receive, send: Send
    ) -> None:
        """Run a route whose answer the drain may have to end, tracking what it sent."""
        task = running_task()
        answer = None if route.own_answer else Answer(send)  # None: nothing sent until it says more
        drain = self.drain
        drain.enter(task, answer)
        try:
            await route.handler(scope, receive, send if answer is None else answer)
        except asyncio.CancelledError:
            if not drain.ended(task):
                raise
            task.uncancel()
            # The handler may have said more about what it sent (the proxy registers its own).
            await end_answer(send, drain.answer_of(task), route.api_format, drained_message())
        finally:
            drain.leave(task)

    async def startup(self) -> None:
        if self.exposition is not None and self.settings.dataplane_metrics_port:
            self._metrics_server = await self.exposition.serve(
                self.settings.dataplane_host, self.settings.dataplane_metrics_port
            )
        await self.upstream.start()
        await self.authoring.start()
        self.state.load_cache()
        self._sync_task = asyncio.create_task(self.sync.run(), name="bus-sync")
        self._explain_task = asyncio.create_task(self.explainer.run(self.bus), name="explain-responder")
        # A draining data plane leaves routing dry-runs to the planes that stay.
        self.drain.on_begin.append(self._stop_explaining)
        if self.snapshot_wait > 0:
            await self._first_snapshot(self.snapshot_wait)

    async def _first_snapshot(self, within: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while self.state.snapshot is None and not self.drain.draining:
            if loop.time() >= deadline:
                log.warning("no snapshot after %g s (from NATS or the disk cache); serving without", within)
                return
            await asyncio.sleep(0.02)

    def _freeze_soon(self, snapshot: Snapshot) -> None:
        """After the first snapshot, and one whose configuration doubled, keep the collector off the
        heap built so far; a second later, so that neither the report nor requests wait for it."""
        if self._freeze_pending or not self._heap.due(len(snapshot.content.backends)):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # applied outside the event loop (a test, a tool): the next apply freezes
            return
        self._freeze_pending = True
        loop.call_later(1.0, self._freeze)

    def _freeze(self) -> None:
        self._freeze_pending = False
        held = self.state.snapshot
        self._heap.freeze(len(held.content.backends) if held is not None else 0)

    def _stop_explaining(self) -> None:
        if self._explain_task is not None:
            self._explain_task.cancel()

    async def shutdown(self) -> None:
        if self.access_log is not None:
            self.access_log.flush()
        if self._metrics_server is not None:
            self._metrics_server.close()
        if self._explain_task is not None:
            self._explain_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._explain_task
        if self._sync_task is not None:
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync_task
        self.state.save_now()  # a revision applied in the last moments is on disk too
        await self.authoring.close()
        await self.upstream.close()
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.shutdown)  # exports the spans still batched

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("data plane start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(settings: DataPlaneSettings) -> DataPlane:
    return DataPlane(settings)
