"""The data plane's Prometheus metrics: what each proxied request did, and the state read at scrape time.

Per request, ``observe`` takes the request's ``Meter`` once it ended and updates pre-resolved label
children, cached per label combination, so a request costs one dict lookup and a few increments
(``prometheus_client``'s ``labels()`` lookup alone costs more than all of that). What the data plane
already counts (requests in flight and queued, ejections, client errors, the snapshot) is read by
``dataplane.metrics_state`` when Prometheus scrapes, not counted twice.

Labels stay bounded: frontend and backend ids come from the snapshot (the admin API caps them), the
endpoint is one of the fixed proxied paths, the status a three-digit code, and model names are the
first ``max_models`` distinct names a backend answered successfully, then ``other``. No request id, client
address or key ever becomes a label.
"""

from __future__ import annotations

from dataclasses import dataclass
from time import perf_counter

from prometheus_client import CollectorRegistry, Counter, Histogram

from dataplane.call import Endpoint
from dataplane.meter import Meter, token_counts

__all__ = ["LATENCY_BUCKETS", "NONE", "OTHER", "DataPlaneMetrics"]

NONE = "none"  # no frontend or backend was chosen (a bad request, no frontend for the host...)
OTHER = "other"  # a model name past the first max_models
# LLM answers take from milliseconds (embeddings, cached prompts) to minutes (long generations).
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
FIRST_BYTE_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
QUEUE_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TOKEN_RATE_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 500.0)
_PREFIX = "ollamaflow_dataplane_"


@dataclass(frozen=True, slots=True)
class _Children:
    """The label children of one (frontend, backend, model, endpoint, status, relay), resolved once."""

    requests: Counter
    duration: Histogram
    first_byte: Histogram
    tokens_in: Counter
    tokens_out: Counter
    token_rate: Histogram


class DataPlaneMetrics:
    """The request metrics of one data plane, in a registry of its own (used on the event loop only)."""

    def __init__(self, *, max_models: int = 100) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.max_models = max_models
        self.live: set[Meter] = set()  # requests under way (in flight per frontend, at scrape time)
        self._models: set[str] = set()
        self._children: dict[tuple[str, str, str, Endpoint, int, str], _Children] = {}
        per_request = ["frontend", "backend", "model", "endpoint"]
        registry = self.registry
        self._requests = Counter(
            _PREFIX + "requests",
            "Proxied requests by frontend, backend, model, endpoint, client format, status code and "
            "relay (passthrough, translated, local: answered by the translation itself, none: no backend)",
            [*per_request, "client_format", "status", "relay"],
            registry=registry,
        )
        self._duration = Histogram(
            _PREFIX + "request_duration_seconds",
            "Time from the request's arrival to the end of its answer",
            per_request,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._first_byte = Histogram(
            _PREFIX + "time_to_first_byte_seconds",
            "Time from the request's arrival to the first byte of its answer's body (the first token "
            "of a stream)",
            per_request,
            buckets=FIRST_BYTE_BUCKETS,
            registry=registry,
        )
        token_labels = ["frontend", "backend", "model"]
        self._tokens_in = Counter(
            _PREFIX + "input_tokens",
            "Prompt tokens, as the backends report them (Ollama prompt_eval_count, OpenAI prompt_tokens)",
            token_labels,
            registry=registry,
        )
        self._tokens_out = Counter(
            _PREFIX + "output_tokens",
            "Generated tokens, as the backends report them (Ollama eval_count, OpenAI completion_tokens)",
            token_labels,
            registry=registry,
        )
        self._token_rate = Histogram(
            _PREFIX + "output_tokens_per_second",
            "Generation speed of streamed answers: output tokens over the time from the first to the "
            "last byte",
            token_labels,
            buckets=TOKEN_RATE_BUCKETS,
            registry=registry,
        )
        self._queue_wait = Histogram(
            _PREFIX + "queue_wait_seconds",
            "Time requests waited in their frontend's queue (only those that waited)",
            ["frontend"],
            buckets=QUEUE_BUCKETS,
            registry=registry,
        )
        self._rejected = Counter(
            _PREFIX + "rejected_requests",
            "Requests turned away because the frontend's queue was full or the wait expired "
            "(503 for Ollama clients, 429 for OpenAI clients)",
            ["frontend", "status"],
            registry=registry,
        )
        self._retries = Counter(
            _PREFIX + "retries",
            "Attempts that failed before the answer and were tried again on another backend",
            ["frontend", "backend"],
            registry=registry,
        )
        self._failovers = Counter(
            _PREFIX + "failovers",
            "Requests answered by another backend after at least one failed attempt",
            ["frontend"],
            registry=registry,
        )
        self._disconnects = Counter(
            _PREFIX + "client_disconnects",
            "Requests whose client went away before the answer ended (the upstream request was cancelled)",
            ["frontend", "backend"],
            registry=registry,
        )

    def model_label(self, model: str, served: bool) -> str:
        """``model``, or ``other`` once ``max_models`` names are taken; only requests a backend
        answered successfully may take a name, so made-up names cannot crowd out real ones."""
        if model in self._models:
            return model
        if served and model and len(self._models) < self.max_models:
            self._models.add(model)
            return model
        return OTHER

    def _resolve(self, key: tuple[str, str, str, Endpoint, int, str]) -> _Children:
        frontend, backend, model, endpoint, status, relay = key
        labels = (frontend, backend, model, endpoint.path)
        fmt = endpoint.api_format.lower()
        children = _Children(
            requests=self._requests.labels(*labels, fmt, str(status), relay),
            duration=self._duration.labels(*labels),
            first_byte=self._first_byte.labels(*labels),
            tokens_in=self._tokens_in.labels(frontend, backend, model),
            tokens_out=self._tokens_out.labels(frontend, backend, model),
            token_rate=self._token_rate.labels(frontend, backend, model),
        )
        self._children[key] = children
        return children

    def observe(self, meter: Meter, endpoint: Endpoint) -> tuple[int, int]:
        """Count the request ``meter`` followed, which just ended; its (input, output) token counts."""
        end = perf_counter()
        call = meter.call
        frontend = meter.frontend or NONE
        served = call.served if call is not None else None
        backend = served.id if served is not None else NONE
        claim = served is not None and 0 < meter.status < 400
        model = self.model_label(meter.model, claim) if meter.model else NONE
        relay = call.relay if call is not None and call.relay else NONE
        key = (frontend, backend, model, endpoint, meter.status, relay)
        children = self._children.get(key) or self._resolve(key)
        children.requests.inc()
        children.duration.observe(end - meter.started)
        if meter.first_byte:
            children.first_byte.observe(meter.first_byte - meter.started)
        tokens = (0, 0)
        if meter.status == 200 and served is not None:
            tokens = token_counts(meter.last, meter.previous)
            if tokens[0]:
                children.tokens_in.inc(tokens[0])
            if tokens[1]:
                children.tokens_out.inc(tokens[1])
                if meter.streamed and end > meter.first_byte:
                    children.token_rate.observe(tokens[1] / (end - meter.first_byte))
        if call is not None:
            if call.queued >= 0:
                self._queue_wait.labels(frontend).observe(call.queued)
            if call.tried:
                for target in call.tried:
                    self._retries.labels(frontend, target.id).inc()
                if served is not None and served not in call.tried and meter.status < 500:
                    self._failovers.labels(frontend).inc()
            if call.guard.client_gone:
                self._disconnects.labels(frontend, backend).inc()
        if meter.rejected:
            self._rejected.labels(frontend, str(meter.status)).inc()
        return tokens
