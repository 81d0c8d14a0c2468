"""OpenTelemetry traces of a real data plane, exported over OTLP/HTTP to a receiver in the test and
decoded with OpenTelemetry's own protobuf types: the request's span under the client's traceparent,
an attempt per backend tried (the failed one an error), the answer, and the traceparent each backend
got naming its attempt."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

import httpx
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from dataplane.settings import DataPlaneSettings
from shared.snapshot import BackendView
from tests.dataplane.harness import SnapshotWriter, running_dataplane, serve_frontend
from tests.dataplane.recorder import recorder

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


@dataclass
class Collector:
    """An OTLP/HTTP traces endpoint keeping every span it is sent."""

    url: str = ""
    spans: list[Span] = field(default_factory=list)
    services: set[str] = field(default_factory=set)

    async def handle(self, request: web.Request) -> web.Response:
        export = ExportTraceServiceRequest()
        export.ParseFromString(await request.read())
        for resource_spans in export.resource_spans:
            for attribute in resource_spans.resource.attributes:
                if attribute.key == "service.name":
                    self.services.add(attribute.value.string_value)
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend(scope_spans.spans)
        return web.Response(body=b"", content_type="application/x-protobuf")


@contextlib.asynccontextmanager
async def collector() -> AsyncIterator[Collector]:
    sink = Collector()
    app = web.Application()
    app.router.add_post("/v1/traces", sink.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    sink.url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1/traces"
    try:
        yield sink
    finally:
        await runner.cleanup()


def _attributes(span: Span) -> dict[str, object]:
    out: dict[str, object] = {}
    for attribute in span.attributes:
        value = attribute.value
        out[attribute.key] = value.string_value or value.int_value or value.bool_value
    return out


async def test_a_request_is_traced_under_the_clients_traceparent_and_the_context_reaches_backends(
    dp_settings: DataPlaneSettings, writer: SnapshotWriter
) -> None:
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # refuses connections: the first attempt fails
    traceparent = f"00-{TRACE_ID}-{CLIENT_SPAN}-01"
    try:
        async with collector() as sink, recorder() as rec:
            settings = replace(dp_settings, otel_endpoint=sink.url)
            async with running_dataplane(settings) as dp:
                dead_url = f"http://127.0.0.1:{dead.getsockname()[1]}"
                backends = [
                    BackendView(id="dead", base_url=dead_url),
                    BackendView(id="rec", base_url=rec.url),
                ]
                await serve_frontend(writer, dp, backends, load_balancing="RoundRobin")
                async with httpx.AsyncClient() as client:
                    for _ in range(2):  # round robin: one of them starts on the dead backend
                        response = await client.post(
                            dp.url + "/api/chat", json={"model": "echo"}, headers={"traceparent": traceparent}
                        )
                        assert response.status_code == 200
            # The data plane stopped: its shutdown exported every span.
    finally:
        dead.close()

    assert sink.services == {"ollamaflow-dataplane"}
    by_id = {span.span_id.hex(): span for span in sink.spans}
    assert {span.trace_id.hex() for span in sink.spans} == {TRACE_ID}
    requests = [s for s in sink.spans if s.name == "POST /api/chat"]
    assert len(requests) == 2
    for request in requests:
        assert request.kind == Span.SPAN_KIND_SERVER and request.parent_span_id.hex() == CLIENT_SPAN
        attributes = _attributes(request)
        assert attributes["http.response.status_code"] == 200 and attributes["ollamaflow.backend"] == "rec"
        assert attributes["gen_ai.request.model"] == "echo"
    attempts = [s for s in sink.spans if s.name.startswith("attempt ")]
    assert sorted(s.name for s in attempts) == ["attempt dead", "attempt rec", "attempt rec"]
    for attempt in attempts:
        assert attempt.kind == Span.SPAN_KIND_CLIENT
        assert by_id[attempt.parent_span_id.hex()].name == "POST /api/chat"
        failed = attempt.status.code == Status.STATUS_CODE_ERROR
        assert failed == (attempt.name == "attempt dead")
    answers = [s for s in sink.spans if s.name == "answer"]
    assert len(answers) == 2 and all(by_id[a.parent_span_id.hex()].name == "POST /api/chat" for a in answers)
    # Each request the backend got carried the traceparent of its own attempt, not the client's.
    sent = [seen.headers["traceparent"] for seen in rec.seen]
    served = {s.span_id.hex() for s in attempts if s.name == "attempt rec"}
    assert {value.split("-")[2] for value in sent} == served
    assert all(value.split("-")[1] == TRACE_ID for value in sent)
