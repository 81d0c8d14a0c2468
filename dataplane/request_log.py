"""What happens when a proxied request ended: its metrics, and its access-log line.

The access log is one line per proxied request on the ``ollamaflow.access`` logger at INFO (on by
default; ``OLLAMAFLOW_ACCESS_LOG=false`` turns it off per data plane), written in batches
(``dataplane.access_log``). Its message is short (``POST /api/chat 200``); its fields, in this order,
are the stable names tools read (JSON keys, or ``key=value`` in text, ``-`` for null):
``request_id``, ``frontend``, ``backend``, ``model``, ``endpoint``,
``client_format``, ``status`` (0: the client left before any answer), ``bytes`` (body bytes sent),
``duration_ms``, ``ttfb_ms`` (to the first body byte; null if none), ``input_tokens`` and
``output_tokens`` (null unless the backend reported them), ``retries``, ``queue_ms`` (null if it
never waited), ``relay`` (passthrough, translated, local or none) and ``client_gone``.
"""

from __future__ import annotations

from time import perf_counter

from dataplane.access_log import AccessLog
from dataplane.call import Endpoint
from dataplane.meter import Meter, token_counts
from dataplane.metrics import NONE, DataPlaneMetrics

__all__ = ["RequestLog"]


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
        fields = {
            "request_id": meter.request_id,
            "frontend": meter.frontend or NONE,
            "backend": served.id if served is not None else NONE,
            "model": access.model(meter.model) if meter.model else NONE,  # the client's own text
            "endpoint": endpoint.path,
            "client_format": endpoint.api_format.lower(),
            "status": meter.status,
            "bytes": meter.bytes,
            "duration_ms": round((end - meter.started) * 1000, 3),
            "ttfb_ms": round((meter.first_byte - meter.started) * 1000, 3) if meter.first_byte else None,
            "input_tokens": tokens[0] if tokens and tokens[0] else None,
            "output_tokens": tokens[1] if tokens and tokens[1] else None,
            "retries": len(call.tried) if call is not None else 0,
            "queue_ms": round(call.queued * 1000, 3) if call is not None and call.queued >= 0 else None,
            "relay": call.relay if call is not None and call.relay else NONE,
            "client_gone": call.guard.client_gone if call is not None else False,
        }
        access.write(f"POST {endpoint.path} {meter.status}", fields)
        return tokens


def _tokens(meter: Meter) -> tuple[int, int]:
    """The token counts of a successful answer a backend gave (metrics off: read here)."""
    call = meter.call
    if meter.status == 200 and call is not None and call.served is not None:
        return token_counts(meter.last, meter.previous)
    return 0, 0
