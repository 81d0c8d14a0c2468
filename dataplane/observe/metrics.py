"""The data plane's Prometheus metrics: what each proxied request did, and the state read at scrape time.

Per request, ``observe`` notes what the counting needs of a request that ended (its
``dataplane.observe.ended.Ended``), and ``flush`` adds a batch of them to plain counters and bucket
arrays, found with one dict lookup per label combination and cached. No ``prometheus_client`` metric
object is touched on the request path (measured: its ``inc`` and ``observe`` take a lock each,
and a request made seven of them, several microseconds); ``RequestCollector`` turns the accumulators
into metric families when Prometheus scrapes. What the data plane already counts (requests in flight
and queued, ejections, client errors, the snapshot) is read by ``dataplane.observe.metrics_state``.

Labels stay bounded: frontend and backend ids come from the snapshot (the admin API caps them), the
endpoint is one of the fixed proxied paths, the status a three-digit code, and model names are the
first ``max_models`` distinct names a backend answered successfully, then ``other``. No request id,
client address or key ever becomes a label. Everything here runs on the event loop, scrapes included.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from dataplane.observe.ended import Ended, token_counts
from dataplane.proxy.call import Call, Endpoint
from dataplane.routing.table import Target

__all__ = ["LATENCY_BUCKETS", "NONE", "OTHER", "DataPlaneMetrics"]

NONE = "none"  # no frontend or backend was chosen (a bad request, no frontend for the host...)
OTHER = "other"  # a model name past the first max_models
# LLM answers take from milliseconds (embeddings, cached prompts) to minutes (long generations).
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
FIRST_BYTE_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
QUEUE_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TOKEN_RATE_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 500.0)
_PREFIX = "ollamaflow_dataplane_"
log = logging.getLogger("ollamaflow.dataplane.metrics")
BATCH = 128  # ended requests noted before they are counted (a scrape counts them at once)
MAX_KEPT = 4 * 1024 * 1024  # bytes of answers' last chunks a batch keeps at most
_NO_TOKENS = (0, 0)
# An ended request as the counting reads it: frontend id, served backend, status, model, endpoint,
# relay, started, ended, first byte (perf_counter()), last and previous chunk, queued, the backends
# tried, client gone, rejected, token counts.
_Noted = tuple[
    str,
    Target | None,
    int,
    str,
    Endpoint,
    str,
    float,
    float,
    float,
    bytes,
    bytes,
    float,
    tuple[Target, ...],
    bool,
    bool,
    tuple[int, int] | None,
]


class _Histogram:
    """Bucket counts (not cumulative; one more than the bounds, for +Inf), their sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # the first bound >= value: Prometheus' le
        self.sum += value

    def exposed(self) -> list[tuple[str, float]]:
        buckets, total = [], 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            total += count
            buckets.append((bound, total))
        return buckets


class _Timing:
    """The latency histograms of one (frontend, backend, model, endpoint)."""

    __slots__ = ("duration", "first_byte")

    def __init__(self) -> None:
        self.duration = _Histogram(LATENCY_BUCKETS)
        self.first_byte = _Histogram(FIRST_BYTE_BUCKETS)


class _Tokens:
    """The token counts of one (frontend, backend, model)."""

    __slots__ = ("input", "output", "rate")

    def __init__(self) -> None:
        self.input = 0
        self.output = 0
        self.rate = _Histogram(TOKEN_RATE_BUCKETS)


class _Series:
    """What one (frontend, backend, model, endpoint, status, relay) adds to: resolved once."""

    __slots__ = ("requests", "timing", "tokens")

    def __init__(self, timing: _Timing, tokens: _Tokens) -> None:
        self.requests = 0
        self.timing = timing
        self.tokens = tokens


class DataPlaneMetrics:
    """The request metrics of one data plane, and the registry they are scraped from."""

    def __init__(self, *, max_models: int = 100) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.max_models = max_models
        self.live: set[Call] = set()  # accepted requests under way (in flight per frontend, at scrape)
        self._models: set[str] = set()
        # (frontend, backend, model, endpoint path, status, relay) -> its series
        self.series: dict[tuple[str, str, str, str, int, str], _Series] = {}
        self.formats: dict[str, str] = {}  # endpoint path -> its client format, lower case
        self.timings: dict[tuple[str, str, str, str], _Timing] = {}
        self.tokens: dict[tuple[str, str, str], _Tokens] = {}
        self.queue_wait: dict[str, _Histogram] = {}  # frontend ->
        self.rejected: dict[tuple[str, str], int] = {}  # (frontend, status) ->
        self.retries: dict[tuple[str, str], int] = {}  # (frontend, backend that failed) ->
        self.failovers: dict[str, int] = {}  # frontend ->
        self.disconnects: dict[tuple[str, str], int] = {}  # (frontend, backend) ->
        self._pending: list[_Noted] = []  # ended requests not counted yet (observe, flush)
        self._kept = 0  # bytes of last chunks they keep
        self.registry.register(RequestCollector(self))

    def model_label(self, model: str, served: bool) -> str:
        """``model``, or ``other`` once ``max_models`` names are taken; only requests a backend
        answered successfully may take a name, so made-up names cannot crowd out real ones."""
        if model in self._models:
            return model
        if served and model and len(self._models) < self.max_models:
            self._models.add(model)
            return model
        return OTHER

    def _resolve(self, key: tuple[str, str, str, str, int, str], endpoint: Endpoint) -> _Series:
        frontend, backend, model, path, _status, _relay = key
        timing = self.timings.get((frontend, backend, model, path))
        if timing is None:
            timing = self.timings[(frontend, backend, model, path)] = _Timing()
        tokens = self.tokens.get((frontend, backend, model))
        if tokens is None:
            tokens = self.tokens[(frontend, backend, model)] = _Tokens()
        self.formats[path] = endpoint.api_format.lower()
        series = self.series[key] = _Series(timing, tokens)
        return series

    def observe(self, ended: Ended) -> None:
        """Note ``ended``, a request that just ended; it is counted with the next batch.

        Requests are added to the counters ``BATCH`` at a time, or at the next scrape: measured,
        counting each request as it ends cost twice what the same work costs in a batch, its code
        and data gone cold in between. A batch also ends once the answers' last chunks it keeps
        (where their token counts are) add up to ``MAX_KEPT`` bytes. Only the fields the counting
        reads are kept (a tuple), not the request: its headers, failover state and connection are
        freed at once instead of outliving a batch.
        """
        sent = ended.guard
        last, previous = sent.last, sent.previous
        self._kept += len(last) + len(previous)
        pending = self._pending
        # What the counting reads, copied now while it is warm; the request itself can go at once.
        pending.append(
            (
                ended.frontend_id,
                ended.served,
                sent.status,
                ended.model,
                ended.endpoint,
                ended.relay,
                ended.started,
                ended.ended_at,
                sent.first_at,
                last,
                previous,
                ended.queued,
                ended.tried,
                sent.client_gone,
                ended.rejected,
                ended.tokens,
            )
        )
        if len(pending) >= BATCH or self._kept > MAX_KEPT:
            try:
                self.flush()
            except Exception:  # a fault in counting must not fail the request that filled the batch
                log.exception("data-plane metrics: a batch of %d requests could not be counted", BATCH)

    @property
    def waiting(self) -> int:
        """Ended requests noted but not counted yet."""
        return len(self._pending)

    def flush(self) -> None:
        """Add the requests noted since the last flush to the counters.

        The histograms' ``observe``, ``model_label`` and ``answer_tokens`` are written out inline:
        the loop runs for every request, and each call saved is a tenth of a microsecond."""
        pending, self._pending, self._kept = self._pending, [], 0
        series_of, models = self.series, self._models
        for (
            frontend,
            served,
            status,
            model,
            endpoint,
            relay,
            started,
            end,
            first_byte,
            last,
            previous,
            queued,
            tried,
            client_gone,
            rejected,
            tokens,
        ) in pending:
            frontend = frontend or NONE
            backend = served.id if served is not None else NONE
            if model not in models:  # a name not taken yet (model_label)
                model = self.model_label(model, served is not None and 0 < status < 400) if model else NONE
            key = (frontend, backend, model, endpoint.path, status, relay or NONE)
            series = series_of.get(key) or self._resolve(key, endpoint)
            series.requests += 1
            duration = end - started
            histogram = series.timing.duration
            histogram.counts[bisect_left(histogram.bounds, duration)] += 1
            histogram.sum += duration
            if first_byte:
                histogram = series.timing.first_byte
                histogram.counts[bisect_left(histogram.bounds, first_byte - started)] += 1
                histogram.sum += first_byte - started
            if tokens is None:
                tokens = token_counts(last, previous) if status == 200 and served else _NO_TOKENS
            if tokens[0] or tokens[1]:
                counts = series.tokens
                counts.input += tokens[0]
                counts.output += tokens[1]
                if tokens[1] and previous and end > first_byte:  # streamed: more than one chunk
                    counts.rate.observe(tokens[1] / (end - first_byte))
            if queued >= 0:
                wait = self.queue_wait.get(frontend)
                if wait is None:
                    wait = self.queue_wait[frontend] = _Histogram(QUEUE_BUCKETS)
                wait.observe(queued)
            if tried:
                for target in tried:
                    self.retries[(frontend, target.id)] = self.retries.get((frontend, target.id), 0) + 1
                if served is not None and served not in tried and status < 500:
                    self.failovers[frontend] = self.failovers.get(frontend, 0) + 1
            if client_gone:
                self.disconnects[(frontend, backend)] = self.disconnects.get((frontend, backend), 0) + 1
            if rejected:
                self.rejected[(frontend, str(status))] = self.rejected.get((frontend, str(status)), 0) + 1


class RequestCollector(Collector):
    """The accumulators of ``DataPlaneMetrics`` as metric families, built at each scrape."""

    def __init__(self, metrics: DataPlaneMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        m = self._metrics
        m.flush()
        per_request = ["frontend", "backend", "model", "endpoint"]
        requests = CounterMetricFamily(
            _PREFIX + "requests",
            "Proxied requests by frontend, backend, model, endpoint, client format, status code and "
            "relay (passthrough, translated, local: answered by the translation itself, none: no backend)",
            labels=[*per_request, "client_format", "status", "relay"],
        )
        for (frontend, backend, model, path, status, relay), series in m.series.items():
            labels = [frontend, backend, model, path, m.formats[path], str(status), relay]
            requests.add_metric(labels, series.requests)
        yield requests
        duration = HistogramMetricFamily(
            _PREFIX + "request_duration_seconds",
            "Time from the request's arrival to the end of its answer",
            labels=per_request,
        )
        first_byte = HistogramMetricFamily(
            _PREFIX + "time_to_first_byte_seconds",
            "Time from the request's arrival to the first byte of its answer's body (the first token "
            "of a stream)",
            labels=per_request,
        )
        for labels, timing in m.timings.items():
            duration.add_metric(list(labels), timing.duration.exposed(), timing.duration.sum)
            first_byte.add_metric(list(labels), timing.first_byte.exposed(), timing.first_byte.sum)
        yield duration
        yield first_byte
        token_labels = ["frontend", "backend", "model"]
        tokens_in = CounterMetricFamily(
            _PREFIX + "input_tokens",
            "Prompt tokens, as the backends report them (Ollama prompt_eval_count, OpenAI prompt_tokens)",
            labels=token_labels,
        )
        tokens_out = CounterMetricFamily(
            _PREFIX + "output_tokens",
            "Generated tokens, as the backends report them (Ollama eval_count, OpenAI completion_tokens)",
            labels=token_labels,
        )
        rate = HistogramMetricFamily(
            _PREFIX + "output_tokens_per_second",
            "Generation speed of streamed answers: output tokens over the time from the first to the "
            "last byte",
            labels=token_labels,
        )
        for labels, tokens in m.tokens.items():
            tokens_in.add_metric(list(labels), tokens.input)
            tokens_out.add_metric(list(labels), tokens.output)
            rate.add_metric(list(labels), tokens.rate.exposed(), tokens.rate.sum)
        yield tokens_in
        yield tokens_out
        yield rate
        queue = HistogramMetricFamily(
            _PREFIX + "queue_wait_seconds",
            "Time requests waited in their frontend's queue (only those that waited)",
            labels=["frontend"],
        )
        for frontend, wait in m.queue_wait.items():
            queue.add_metric([frontend], wait.exposed(), wait.sum)
        yield queue
        yield _counter(
            "rejected_requests",
            "Requests turned away because the frontend's queue was full or the wait expired "
            "(503 for Ollama clients, 429 for OpenAI clients)",
            ["frontend", "status"],
            m.rejected,
        )
        yield _counter(
            "retries",
            "Attempts that failed before the answer and were tried again on another backend",
            ["frontend", "backend"],
            m.retries,
        )
        yield _counter(
            "failovers",
            "Requests answered by another backend after at least one failed attempt",
            ["frontend"],
            {(frontend,): count for frontend, count in m.failovers.items()},
        )
        yield _counter(
            "client_disconnects",
            "Requests whose client went away before the answer ended (the upstream request was cancelled)",
            ["frontend", "backend"],
            m.disconnects,
        )


def _counter(
    name: str, documentation: str, labels: list[str], values: dict[tuple[str, ...], int]
) -> CounterMetricFamily:
    family = CounterMetricFamily(_PREFIX + name, documentation, labels=labels)
    for key, value in values.items():
        family.add_metric(list(key), value)
    return family
