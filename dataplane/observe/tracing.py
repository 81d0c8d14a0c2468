"""OpenTelemetry traces of proxied requests: optional, on when ``OLLAMAFLOW_OTEL_ENDPOINT`` names an
OTLP/HTTP traces endpoint (``pip install 'ollamaflow[otel]'``); without it nothing is imported and a
request pays one ``None`` check.

Each proxied request is a SERVER span (``POST /api/chat``), the child of the client's ``traceparent``
when it sent one. Its children: ``queue`` (the wait in the frontend's queue, if any), one
``attempt <backend>`` CLIENT span per backend tried (failed ones marked as errors), each sending the
backend a ``traceparent`` naming it (the client's own is replaced; ``tracestate`` passes as it
came), and ``answer``, from the backend's answer head to the end of what the client got (the
stream). Spans whose timing is only known at the end are recorded then, with their real start and
end times. The sampler is the SDK's, so ``OTEL_TRACES_SAMPLER`` and ``OTEL_TRACES_SAMPLER_ARG``
apply (default: sample every trace a client did not mark as unsampled).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from shared.errors import ConfigError

if TYPE_CHECKING:
    from dataplane.observe.ended import Ended
    from dataplane.proxy.call import Endpoint

__all__ = ["RequestTrace", "Tracing"]

_PROPAGATED = (b"traceparent", b"tracestate")


class Tracing:
    """The tracer of one data plane, and the provider that exports its spans."""

    def __init__(self, provider: Any) -> None:
        from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.provider = provider
        self.tracer = provider.get_tracer("ollamaflow.dataplane")
        self.propagator = TraceContextTextMapPropagator()
        self.in_context = set_span_in_context
        self.server, self.client, self.internal = SpanKind.SERVER, SpanKind.CLIENT, SpanKind.INTERNAL
        self.error = Status(StatusCode.ERROR)

    @classmethod
    def exporting(cls, endpoint: str, dataplane_id: str) -> Tracing:
        """Spans batched to the OTLP/HTTP ``endpoint`` (e.g. ``http://collector:4318/v1/traces``)."""
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError as exc:
            raise ConfigError(
                "OLLAMAFLOW_OTEL_ENDPOINT needs the OpenTelemetry SDK and its OTLP/HTTP exporter "
                f"(pip install 'ollamaflow[otel]'): {exc}"
            ) from None
        resource = Resource.create(
            {"service.name": "ollamaflow-dataplane", "service.instance.id": dataplane_id}
        )
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        return cls(provider)

    def start(
        self, headers: Iterable[tuple[bytes, bytes]], endpoint: Endpoint, started: float
    ) -> RequestTrace:
        """The trace of a request that arrived at ``started`` (perf_counter), under the client's
        ``traceparent`` if it sent one."""
        carrier = {name.decode(): value.decode("latin-1") for name, value in headers if name in _PROPAGATED}
        parent = self.propagator.extract(carrier) if carrier else None
        now_ns = time.time_ns()
        span = self.tracer.start_span(
            f"POST {endpoint.path}",
            context=parent,
            kind=self.server,
            start_time=now_ns,
            attributes={"http.request.method": "POST", "url.path": endpoint.path},
        )
        return RequestTrace(self, span, now_ns, started)

    def shutdown(self) -> None:
        """Export what is left (at the data plane's stop)."""
        self.provider.shutdown()


class RequestTrace:
    """The spans of one request (used on the event loop only)."""

    __slots__ = (
        "_attempts",
        "_epoch_ns",
        "_first_ns",
        "_open",
        "_started",
        "_tracing",
        "answered_at",
        "header",
        "span",
    )

    def __init__(self, tracing: Tracing, span: Any, epoch_ns: int, started: float) -> None:
        self._tracing = tracing
        self.span = span
        self._epoch_ns = epoch_ns  # time.time_ns() at ``started`` (perf_counter)
        self._started = started
        self._attempts: list[tuple[Any, str]] = []  # (span, backend id), in order
        self._open: Any = None  # the attempt span not ended yet
        self._first_ns = 0  # when the first attempt started
        self.header = b""  # the traceparent line of the current attempt, for the upstream head
        self.answered_at = 0.0  # perf_counter() when a backend's answer head arrived

    def _ns(self, at: float) -> int:
        return self._epoch_ns + int((at - self._started) * 1e9)

    def attempt(self, backend_id: str) -> None:
        """A request is about to go to ``backend_id``: its span, and the traceparent it carries."""
        tracing = self._tracing
        now = time.time_ns()
        if self._open is not None:  # the attempt before failed: no answer came, so another is tried
            self._open.set_status(tracing.error)
            self._open.end(end_time=now)
        self._first_ns = self._first_ns or now
        span = tracing.tracer.start_span(
            f"attempt {backend_id}",
            context=tracing.in_context(self.span),
            kind=tracing.client,
            start_time=now,
            attributes={"ollamaflow.backend": backend_id, "ollamaflow.attempt": len(self._attempts) + 1},
        )
        self._attempts.append((span, backend_id))
        self._open = span
        carrier: dict[str, str] = {}
        tracing.propagator.inject(carrier, context=tracing.in_context(span))
        parent = carrier.get("traceparent", "")
        self.header = b"traceparent: %s\r\n" % parent.encode("ascii") if parent else b""

    def answered(self, status: int, at: float) -> None:
        """The current attempt's backend answered with ``status`` (its head arrived at ``at``)."""
        span = self._open
        if span is not None:
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(self._tracing.error)
            span.end(end_time=self._ns(at))
            self._open = None
        self.answered_at = at

    def finish(self, ended: Ended, tokens: tuple[int, int]) -> None:
        """End every span, with what the request came to."""
        tracing, span, sent, end = self._tracing, self.span, ended.guard, ended.ended_at
        context = tracing.in_context(span)
        tried = {target.id for target in ended.tried}
        if self._open is not None:  # no answer came: it failed, or the client left first
            if self._attempts[-1][1] in tried:
                self._open.set_status(tracing.error)
            self._open.end(end_time=self._ns(end))
            self._open = None
        if ended.queued >= 0:
            first = self._first_ns or self._ns(end)
            queue = tracing.tracer.start_span(
                "queue", context=context, kind=tracing.internal, start_time=first - int(ended.queued * 1e9)
            )
            queue.end(end_time=first)
        if self.answered_at:
            answer = tracing.tracer.start_span(
                "answer", context=context, kind=tracing.internal, start_time=self._ns(self.answered_at)
            )
            answer.set_attribute("ollamaflow.bytes", sent.sent)
            answer.end(end_time=self._ns(end))
        attributes: dict[str, Any] = {
            "http.response.status_code": sent.status,
            "ollamaflow.request_id": ended.request_id,
            "ollamaflow.frontend": ended.frontend_id,
            "ollamaflow.client_format": ended.endpoint.api_format.lower(),
            "ollamaflow.retries": len(tried),
        }
        if ended.model:
            attributes["gen_ai.request.model"] = ended.model
        if ended.served is not None:
            attributes["ollamaflow.backend"] = ended.served.id
            attributes["ollamaflow.relay"] = ended.relay or "none"
        if tokens[0]:
            attributes["gen_ai.usage.input_tokens"] = tokens[0]
        if tokens[1]:
            attributes["gen_ai.usage.output_tokens"] = tokens[1]
        if sent.client_gone:
            attributes["ollamaflow.client_gone"] = True
        span.set_attributes(attributes)
        if sent.status >= 500 or sent.status == 0:
            span.set_status(tracing.error)
        span.end(end_time=self._ns(end))
