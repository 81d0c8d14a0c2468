"""What happens when a request ended: its metrics (proxied ones), and its access-log line.

The access log is one line per request on the ``ollamaflow.access`` logger at INFO (on by default;
``OLLAMAFLOW_ACCESS_LOG=false`` turns it off per data plane), written in batches
(``dataplane.observe.access_log``), except the data plane's own probes and scrapes (``/healthz``,
``/readyz``, ``/metrics``: an orchestrator's polling would drown the traffic). Proxied requests are
logged from their ``Meter`` (``RequestLog``); every other answer (model lists, model management,
``/``, 404s, refusals) through a wrapped ``send`` (``LoggedAnswer``), the fields a proxied request
alone has left null. Its message is short (``POST /api/chat 200``); its fields, in this order,
are the stable names tools read (JSON keys, or ``key=value`` in text, ``-`` for null):
``request_id``, ``frontend``, ``backend``, ``model``, ``endpoint``,
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
from dataplane.observe.meter import Meter, token_counts
from dataplane.observe.metrics import NONE, DataPlaneMetrics
from dataplane.proxy.call import Endpoint

__all__ = ["UNLOGGED_PATHS", "LoggedAnswer", "RequestLog"]

UNLOGGED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_SHOWN_PATH = 200  # longer raw paths are cut in the line


class RequestLog:
    """The observer the proxy calls with each ended request's ``Meter``."""

    def __init__(self, metrics: DataPlaneMetrics | None, access: AccessLog | None) -> None:
        self._metrics = metrics
        self.access = access

    def __call__(self, meter: Meter, endpoint: Endpoint) -> None:
        metrics = self._metrics
        tokens = metrics.observe(meter, endpoint) if metrics is not None else None
        access = self.access
        if access is not None and access.enabled:
            tokens = self._log(access, meter, endpoint, tokens)
        trace = meter.trace
        if trace is not None:
            if tokens is None:
                tokens = _tokens(meter)
            trace.finish(meter, endpoint, perf_counter(), tokens)

    def _log(
        self, access: AccessLog, meter: Meter, endpoint: Endpoint, tokens: tuple[int, int] | None
    ) -> tuple[int, int]:
        end = perf_counter()
        call = meter.call
        served = call.served if call is not None else None
        if tokens is None:
            tokens = _tokens(meter)
        status = meter.status
        path = endpoint.path
        entry = AccessLine(
            "",
            LEVEL,
            LOGGER,
            f"POST {path} {status}",  # message
            meter.request_id,
            meter.frontend or NONE,
            served.id if served is not None else NONE,  # backend
            access.model(meter.model) if meter.model else NONE,  # the client's own text
            path,  # endpoint
            endpoint.api_format.lower(),  # client_format
            status,
            meter.bytes,
            millis(end - meter.started),  # duration_ms
            millis(meter.first_byte - meter.started) if meter.first_byte else None,  # ttfb_ms
            tokens[0] or None,  # input_tokens
            tokens[1] or None,  # output_tokens
            len(call.tried) if call is not None else 0,  # retries
            millis(call.queued) if call is not None and call.queued >= 0 else None,  # queue_ms
            call.relay if call is not None and call.relay else NONE,
            call.guard.client_gone if call is not None else False,
        )
        access.write(entry)
        return tokens


def _tokens(meter: Meter) -> tuple[int, int]:
    """The token counts of a successful answer a backend gave (metrics off: read here)."""
    call = meter.call
    if meter.status == 200 and call is not None and call.served is not None:
        return token_counts(meter.last, meter.previous)
    return 0, 0


class LoggedAnswer:
    """A ``send`` that notes the status and body bytes of an answer the proxy does not meter, and
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
