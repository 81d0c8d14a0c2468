"""What happens when a request ended: its metrics (proxied ones), and its access-log line.

The access log is one line per request on the ``ollamaflow.access`` logger at INFO (on by default;
``OLLAMAFLOW_ACCESS_LOG=false`` turns it off per data plane), written in batches
(``dataplane.observe.access_log``), except the data plane's own probes and scrapes (``/healthz``,
``/readyz``, ``/metrics``: an orchestrator's polling would drown the traffic). Proxied requests are
logged once they ended (``RequestLog``, from their ``dataplane.observe.ended.Ended``); every other
answer (model lists, model management, ``/``, 404s, refusals) through a wrapped ``send``
(``LoggedAnswer``), the fields a proxied request alone has left null. Its message is short
(``POST /api/chat 200``); its fields, in this order, are the stable names tools read (JSON keys,
or ``key=value`` in text, ``-`` for null): ``request_id``, ``frontend``, ``backend``, ``model``, ``endpoint``,
``client_format``, ``status`` (0: the client left before any answer), ``bytes`` (body bytes sent),
``duration_ms``, ``ttfb_ms`` (to the first body byte; null if none), ``input_tokens`` and
``output_tokens`` (null unless the backend reported them), ``retries``, ``queue_ms`` (null if it
never waited), ``relay`` (passthrough, translated, local or none) and ``client_gone``.
"""

from __future__ import annotations

from collections.abc import Iterable
from time import perf_counter
from typing import Any

from dataplane.http.headers import request_id_of
from dataplane.http.responses import Send
from dataplane.observe.access_log import LEVEL, LOGGER, AccessLine, AccessLog, millis
from dataplane.observe.ended import Ended, answer_tokens
from dataplane.observe.metrics import NONE, DataPlaneMetrics

__all__ = ["UNLOGGED_PATHS", "LoggedAnswer", "RequestLog"]

UNLOGGED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_SHOWN_PATH = 200  # longer raw paths are cut in the line


class RequestLog:
    """The observer the proxy calls with each proxied request once it ended."""

    def __init__(self, metrics: DataPlaneMetrics | None, access: AccessLog | None) -> None:
        self._metrics = metrics
        self.access = access

    def __call__(self, ended: Ended) -> None:
        access = self.access if self.access is not None and self.access.enabled else None
        trace = ended.trace
        if access is not None or trace is not None:  # read once, before the metrics copy them
            ended.tokens = answer_tokens(ended)
        if access is not None:
            self._log(access, ended)
        metrics = self._metrics
        if metrics is not None:
            metrics.observe(ended)  # reads the token counts itself when not read yet
        if trace is not None:
            trace.finish(ended, ended.tokens or (0, 0))

    def _log(self, access: AccessLog, ended: Ended) -> None:
        served, sent, endpoint = ended.served, ended.guard, ended.endpoint
        tokens = ended.tokens or (0, 0)
        status = sent.status
        path = endpoint.path
        entry = AccessLine(
            "",
            LEVEL,
            LOGGER,
            f"POST {path} {status}",  # message
            ended.request_id,
            ended.frontend_id or NONE,
            served.id if served is not None else NONE,  # backend
            access.model(ended.model) if ended.model else NONE,  # the client's own text
            path,  # endpoint
            endpoint.api_format.lower(),  # client_format
            status,
            sent.sent,  # bytes
            millis(ended.ended_at - ended.started),  # duration_ms
            millis(sent.first_at - ended.started) if sent.first_at else None,  # ttfb_ms
            tokens[0] or None,  # input_tokens
            tokens[1] or None,  # output_tokens
            len(ended.tried),  # retries
            millis(ended.queued) if ended.queued >= 0 else None,  # queue_ms
            ended.relay or NONE,
            sent.client_gone,
        )
        access.write(entry)


class LoggedAnswer:
    """A ``send`` that notes the status and body bytes of an answer the proxy does not observe, and
    writes its access-log line when ``done`` is called."""

    __slots__ = (
        "_access",
        "_bytes",
        "_first",
        "_format",
        "_method",
        "_path",
        "_request_id",
        "_send",
        "_started",
        "_status",
    )

    def __init__(
        self, access: AccessLog, send: Send, method: str, path: str, headers: Iterable[tuple[bytes, bytes]]
    ) -> None:
        self._access = access
        self._send = send
        self._method = method
        self._path = path if len(path) <= _SHOWN_PATH else path[:_SHOWN_PATH] + "..."
        self._request_id = next((request_id_of(v) for k, v in headers if k == b"x-request-id"), "")
        self._format = "ollama"
        self._started = perf_counter()
        self._status = 0
        self._bytes = 0
        self._first = 0.0

    def speaking(self, api_format: str) -> None:
        """The API the route answers in (its errors' format), for ``client_format``."""
        self._format = api_format.lower()

    async def __call__(self, message: Any) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self._status = message["status"]
        elif kind == "http.response.body":
            size = len(message.get("body", b""))
            if size and not self._first:
                self._first = perf_counter()
            self._bytes += size
        await self._send(message)

    def done(self) -> None:
        started = self._started
        self._access.write(
            AccessLine(
                "",
                LEVEL,
                LOGGER,
                f"{self._method} {self._path} {self._status}",  # message
                self._request_id or None,
                NONE,  # frontend
                NONE,  # backend
                NONE,  # model
                self._path,  # endpoint
                self._format,  # client_format
                self._status,
                self._bytes,
                millis(perf_counter() - started),  # duration_ms
                millis(self._first - started) if self._first else None,  # ttfb_ms
                None,  # input_tokens
                None,  # output_tokens
                0,  # retries
                None,  # queue_ms
                "local",  # relay
                False,  # client_gone
            )
        )
