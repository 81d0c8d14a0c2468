"""The data plane's own answers: Ollama's root and version probes, liveness, readiness and metrics."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from dataplane.http.incoming import Receive
from dataplane.http.responses import OLLAMA_VERSION, TEXT, Send, send_bytes, send_json
from dataplane.parts import DataPlaneParts
from shared.metrics_http import CONTENT_TYPE

__all__ = ["Probes"]


class Probes:
    """Handlers that answer from the data plane's own state, without a backend."""

    def __init__(self, parts: DataPlaneParts) -> None:
        self._parts = parts

    async def root(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        await send_bytes(send, 200, b"Ollama is running", TEXT)

    async def version(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        await send_json(send, 200, {"version": OLLAMA_VERSION})

    async def healthz(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        await send_json(send, 200, {"status": "ok", "id": self._parts.settings.dataplane_id})

    async def readyz(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        parts = self._parts
        drain, state = parts.drain, parts.state
        if drain.draining:  # stopping: send nothing new here (only existing connections still reach it)
            body = {
                "status": "draining",
                "detail": f"shutting down: {drain.running} request(s) still running, "
                f"for at most {parts.settings.drain_timeout:g} s from the stop signal",
                "revision": state.revision,
            }
            await send_json(send, 503, body)
            return
        if state.snapshot is None:
            body = {"status": "starting", "detail": "no snapshot yet (from NATS or the disk cache)"}
            await send_json(send, 503, body)
            return
        body = {"status": "ok", "revision": state.revision, "nats": parts.bus.connected}
        if state.error:
            body["snapshot_error"] = state.error
        await send_json(send, 200, body)

    async def metrics(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        exposition = self._parts.exposition
        assert exposition is not None, "routed only when metrics are on"
        if not exposition.authorized(scope["headers"]):
            message = b"a bearer token is required (OLLAMAFLOW_METRICS_TOKEN)\n"
            await send_bytes(send, 401, message, TEXT, [(b"www-authenticate", b"Bearer")])
            return
        await send_bytes(send, 200, exposition.body(), CONTENT_TYPE)
