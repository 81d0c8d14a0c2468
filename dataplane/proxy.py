"""The proxied request, start to end: match, pick, forward, stream back.

Stream chunks go to the client as they arrive. A client that disconnects cancels the request task,
which closes the upstream connection, so the backend stops generating. Errors before the first byte
become the client's API error shape with their status; after it, an NDJSON stream ends with Ollama's
``{"error": ...}`` line and an SSE stream with OpenAI's error event. A backend of the other API
format gets the request translated (``dataplane.crossing``); the same format passes through untouched.
Backends this process saw refuse connections or fail repeatedly are passed over while their circuit
breaker (``dataplane.breaker``) is open. Each backend takes only this data plane's share of its limits
(``dataplane.admission``): the rest wait in the frontend's queue. A refused or reset connection, a
timeout or a 5xx answer before any byte went to the client is retried on the next candidate backend
(``MAX_ATTEMPTS``, when the frontend allows retries); the client gets the last failure.

Answers of any size pass through with bounded memory (``dataplane.passthrough``). The upstream
client is any ``dataplane.transport.Transport``; the frontend's ``TimeoutMs`` is its time limit
("no progress for TimeoutMs", see that module). When the data plane stops, requests run on until its
drain timeout; those still running then end in their client's format (``dataplane.drain``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterator, MutableMapping
from time import perf_counter
from typing import Any

from dataplane.access import Access
from dataplane.admission import Admission, QueueRejected
from dataplane.breaker import Breakers
from dataplane.call import Call, Endpoint, own_lines, upstream_request
from dataplane.crossing import Crossing, relay, send_local
from dataplane.disconnect import DisconnectWatch
from dataplane.drain import Drain, drained_message, end_answer
from dataplane.explain import route_header
from dataplane.headers import read_client_headers
from dataplane.incoming import BodyReader, ClientGone, Receive, read_model_request
from dataplane.meter import Meter
from dataplane.model_errors import Unservable
from dataplane.passthrough import pass_through
from dataplane.pins import with_model
from dataplane.responses import JSON, Send, send_bytes, send_error, send_failure
from dataplane.routing import Target
from dataplane.state import SnapshotState
from dataplane.sticky import session_key
from dataplane.tracing import Tracing
from dataplane.traffic import Traffic
from dataplane.translate.common import LocalReply
from dataplane.translate.errors import Untranslatable
from dataplane.translate.exchanges import Translations
from dataplane.transport import (
    AnswerTooLarge,
    PoolTimeout,
    RequestNotSent,
    Transport,
    UpstreamResponse,
)
from shared.errors import OllamaFlowError, UpstreamError

__all__ = ["Endpoint", "Proxy"]

log = logging.getLogger("ollamaflow.dataplane.proxy")

# Attempts per request when backends fail before answering (the first one included).
MAX_ATTEMPTS = 3
QUEUE_HEADER = b"x-ollamaflow-queue-ms"


class Proxy:
    def __init__(
        self,
        state: SnapshotState,
        upstream: Transport,
        traffic: Traffic,
        translations: Translations,
        breakers: Breakers,
        *,
        access: Access,
        admission: Admission,
        bodies: BodyReader,
        max_translated_body: int,
        drain: Drain,
        observe: Callable[[Meter, Endpoint], None] | None = None,
        live: set[Meter] | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        """``observe`` (metrics, access log) gets each request's ``Meter`` when it ended; ``live``
        holds the meters of requests under way. Without ``observe`` nothing is measured."""
        self._observe = observe
        self._tracing = tracing  # spans per request (dataplane.tracing); needs ``observe`` to end them
        self._live: set[Meter] = live if live is not None else set()
        self._bodies = bodies
        self._access = access
        self._admission = admission
        self._max_translated_body = max_translated_body
        self._breakers = breakers
        self._state = state
        self._translations = translations
        self._upstream = upstream
        self._traffic = traffic
        self._watch = DisconnectWatch()
        self._drain = drain

    async def handle(
        self, scope: MutableMapping[str, Any], receive: Receive, send: Send, endpoint: Endpoint
    ) -> None:
        observe = self._observe
        if observe is None:
            await self._handle(scope, receive, send, endpoint, None)
            return
        # Measured: the client's send is wrapped to note what went out, and the request is counted
        # (and logged) once it ended, however it ended.
        meter = Meter(send, perf_counter())
        if self._tracing is not None:
            meter.trace = self._tracing.start(scope["headers"], endpoint, meter.started)
        live = self._live
        live.add(meter)
        try:
            await self._handle(scope, receive, meter, endpoint, meter)
        finally:
            live.discard(meter)
            observe(meter, endpoint)
            meter.call = None  # the call points back at it: no cycle left for the collector to find

    async def _handle(
        self,
        scope: MutableMapping[str, Any],
        receive: Receive,
        send: Send,
        endpoint: Endpoint,
        meter: Meter | None,
    ) -> None:
        client = read_client_headers(scope["headers"])
        # The client's X-Request-ID (or traceparent's trace id) when valid; uuid4().hex costs ten times
        # as much as urandom.
        request_id = client.request_id or os.urandom(16).hex()
        id_header = (b"x-ollamaflow-request", request_id.encode())
        if meter is not None:
            meter.request_id = request_id
        try:
            route = self._state.table.frontend_for(client.host)
            if meter is not None:
                meter.frontend = route.frontend.id
            pool = route.pool(endpoint.kind)
            body = await self._bodies.json(
                receive, client.content_length, route.frontend.max_request_body_size
            )
            model = read_model_request(body).model_name  # rejects bodies no backend could parse
            if route.pinned_models:
                pinned_model = route.pinned_models.get(endpoint.kind)
                if pinned_model and pinned_model != model:  # route as if the client had asked for it
                    body, model = with_model(body, pinned_model), pinned_model
            if meter is not None:
                meter.model = model
            choices = pool.choices(model)
            if client.label:
                choices = pool.labelled(choices, client.label)
        except ClientGone:
            log.debug("request %s: the client went away before sending its body", request_id)
            return
        except Unservable as exc:
            body = exc.body(endpoint.api_format)
            await send_bytes(send, exc.status, body, JSON, [id_header, *exc.headers])
            return
        except OllamaFlowError as exc:
            if exc.status == 400:  # a body no backend could parse: counted, not logged (no log floods)
                self._traffic.client_errors["bad_request"] += 1
            await send_failure(send, endpoint.api_format, exc, [id_header])
            return
        drain = self._drain
        if drain.ending:  # arrived after the drain timeout: no backend sees it
            await end_answer(send, None, endpoint.api_format, drained_message(request_id), [id_header])
            return
        self._traffic.requests_total += 1
        peer = scope.get("client")
        forwarded_for = client.forwarded_for
        if peer:  # the client's own address joins the chain
            address = peer[0].encode("latin-1")
            forwarded_for = forwarded_for + b", " + address if forwarded_for else address
        task = asyncio.current_task()
        assert task is not None
        call = Call(
            endpoint=endpoint,
            method=scope["method"].encode("ascii"),
            path=endpoint.path_bytes,
            query=scope["query_string"],
            route=route,
            pool=pool,
            choices=choices,
            model=model,
            forward=client.forward,
            own_lines=own_lines(forwarded_for, id_header[1]),
            body=body,
            id_header=id_header,
            guard=self._watch.guard(receive, task),
            sticky_key=session_key(client.forward, route.sticky_headers) if route.sticky_headers else None,
            explain=client.explain and self._access.explain_allowed(route, scope["headers"]),
        )
        if meter is not None:
            meter.call = call
            call.meter = meter
        drain.enter(task, call.guard)  # what went out, should the drain have to end it
        try:
            await self._forward(call, send)
        except QueueRejected as exc:
            call.guard.finishing = True
            self._traffic.rejected_total += 1
            if meter is not None:
                meter.rejected = True
            log.debug("request %s: %s", request_id, exc.message)  # counted in the reports instead
            status, body, retry_after = exc.response(endpoint.api_format)
            await send_bytes(send, status, body, JSON, [id_header, retry_after, *self._queue_header(call)])
        except OllamaFlowError as exc:  # only raised before the response started
            call.guard.finishing = True
            if not isinstance(exc, UpstreamError):  # _attempt and _forward logged those already
                log.debug("request %s: %s", request_id, exc.message)  # the client hears it; no log flood
            headers = [id_header, *self._queue_header(call)]
            if call.decision is not None:
                headers.append(self._route_header(call, None))
            if isinstance(exc, Untranslatable):
                body = exc.openai_body() if endpoint.api_format == "OpenAI" else exc.ollama_body()
                await send_bytes(send, exc.status, body, JSON, headers)
            elif isinstance(exc, UpstreamError):  # the details are in the log, under the request id
                message = f"{exc.message} (request {request_id})"
                await send_error(send, endpoint.api_format, exc.status, message, headers)
            else:
                await send_failure(send, endpoint.api_format, exc, headers)
        except asyncio.CancelledError:
            if call.guard.client_gone:
                task.uncancel()
                log.debug("request %s: the client went away; upstream request cancelled", request_id)
            elif drain.ended(task):
                task.uncancel()
                log.debug("request %s: ended by the drain timeout (the data plane stops)", request_id)
                message = drained_message(request_id)
                headers = [id_header, *self._queue_header(call)]
                await end_answer(send, call.guard, endpoint.api_format, message, headers)
            else:
                raise
        finally:
            call.guard.close()

    def _crossing(self, call: Call, target: Target) -> Crossing | LocalReply | None:
        """The translation ``target`` needs for this request; None when both speak the same format."""
        endpoint = call.endpoint
        if target.api_format == endpoint.api_format:
            return None
        exchange = self._translations.for_request(
            endpoint.path, endpoint.api_format, target.api_format, backend=target.id, dialect=target.dialect
        )
        if exchange is None:
            return None
        now = time.time_ns()
        translated = exchange.request(call.body, now_ns=now, backend_model=target.listed_name(call.model))
        if isinstance(translated, LocalReply):
            return translated
        return Crossing(exchange, translated, now)

    def _admitted(self, ordered: Iterator[Target], first: Target) -> Iterator[Target]:
        """The targets whose breakers let a request through; the first pick if none does, rather
        than refusing the request outright (passive health can be wrong, e.g. after a blip).

        Asking consumes an ejected backend's one trial request: ``_spare_trials`` gives back those
        that admission did not pick."""
        admitted = False
        for target in ordered:
            if self._breakers.allows(target.id):
                admitted = True
                yield target
        if not admitted:
            yield first

    async def _open(self, call: Call) -> tuple[Target, UpstreamResponse | LocalReply, Crossing | None]:
        """Order the candidates, then send to the first that takes the request (``_attempt``).

        Backends this process saw failing (``Breakers``) are passed over while they rest.
        """
        pool, choices, breakers = call.pool, call.choices, self._breakers
        key = call.sticky_key
        now = time.monotonic() if key is not None else 0.0  # ages the memory of moved sessions
        in_flight, limits = self._traffic.in_flight, self._admission.gates.limits
        decision = pool.order(
            choices, model=call.model, in_flight=in_flight, limits=limits, sticky_key=key, now=now
        )
        if call.explain:
            call.decision = decision
        order = decision.order
        first, ordered = order[0], iter(order)
        if breakers.active:
            ordered = self._admitted(ordered, first)
        call.candidates = tuple(ordered)
        call.attempts = MAX_ATTEMPTS if call.route.frontend.allow_retries else 1
        return await self._attempt(call, None)

    def _spare_trials(self, call: Call, used: Target | None) -> None:
        """Give back the trial requests ``_admitted`` took for candidates other than ``used``."""
        breakers = self._breakers
        if breakers.active:
            ejected = breakers.ejected()
            for target in call.candidates:
                if target is not used and target.id in ejected:
                    breakers.abandoned(target.id)

    def _release(self, target: Target) -> None:
        self._traffic.finished(target.id)
        self._admission.release(target.id)

    def _failed(self, call: Call, target: Target, failure: UpstreamError) -> UpstreamError:
        """Give back ``target``'s slot and pass it over from now on."""
        self._release(target)
        call.tried += (target,)
        return failure

    def _may_retry(self, call: Call) -> bool:
        """Is there an attempt left and a candidate not tried yet (besides the current one)?"""
        return call.attempts > 0 and len(call.tried) + 1 < len(call.candidates)

    def _queue_header(self, call: Call) -> list[tuple[bytes, bytes]]:
        return [] if call.queued < 0 else [(QUEUE_HEADER, b"%d" % round(call.queued * 1000))]

    def _headers(self, call: Call, target: Target) -> list[tuple[bytes, bytes]]:
        if call.queued < 0 and call.decision is None:
            return [target.backend_header, call.id_header]
        headers = [target.backend_header, call.id_header, *self._queue_header(call)]
        if call.decision is not None:
            headers.append(self._route_header(call, target))
        return headers

    def _route_header(self, call: Call, served: Target | None) -> tuple[bytes, bytes]:
        """X-OllamaFlow-Route (``dataplane.explain``), for a client that sent X-OllamaFlow-Explain."""
        assert call.decision is not None
        gates, limits = self._admission.gates, call.pool.limits

        def limit_of(backend_id: str) -> int:
            gate = gates.gate(backend_id)
            return gate.max_parallel if gate is not None else limits.get(backend_id, 0)

        queued_ms = -1 if call.queued < 0 else round(call.queued * 1000)
        return route_header(
            call.decision,
            in_flight=self._traffic.in_flight,
            limit_of=limit_of,
            served=served,
            failed=call.tried,
            queued_ms=queued_ms,
        )

    async def _attempt(
        self, call: Call, failure: UpstreamError | None
    ) -> tuple[Target, UpstreamResponse | LocalReply, Crossing | None]:
        """Send to the first untried candidate with room, waiting in the frontend's queue while none
        has; after a failure before the answer, to the next, while attempts are left. The client
        gets the last failure: a 5xx answer is relayed, an error raised."""
        breakers, admission = self._breakers, self._admission
        while call.attempts > 0:
            candidates = call.candidates
            if call.tried:
                candidates = tuple(t for t in candidates if t not in call.tried)
                if not candidates:
                    break
            target = admission.admit(candidates)
            if not call.tried:
                self._spare_trials(call, target)
            if target is None:
                target, waited = await admission.wait(candidates, call.route.frontend)
                call.queued = max(call.queued, 0.0) + waited
            call.attempts -= 1
            call.served = target
            self._traffic.started(target.id)
            try:
                crossing = self._crossing(call, target)
            except BaseException:
                breakers.abandoned(target.id)
                self._release(target)
                raise
            if isinstance(crossing, LocalReply):
                breakers.abandoned(target.id)
                self._release(target)
                return target, crossing, None
            if call.trace is not None:
                call.trace.attempt(target.id)
            head, body = upstream_request(call, target, crossing)
            try:
                response = await self._upstream.request(
                    target.id, target.http.origin, head, body, call.route.read_timeout
                )
            except PoolTimeout:  # this data plane's connections are all taken: no backend's fault
                breakers.abandoned(target.id)
                self._release(target)
                raise
            except RequestNotSent as exc:  # no connection: nothing was sent
                log.warning("request %s: %s", call.request_id, exc.logged)
                breakers.unreachable(target.id, exc.message)
                failure = self._failed(call, target, exc)
                continue
            except UpstreamError as exc:  # no answer in time, or the connection broke before one
                log.warning("request %s: %s", call.request_id, exc.logged)
                breakers.server_error(target.id, exc.message)
                failure = self._failed(call, target, exc)
                continue
            except BaseException:
                self._release(target)
                breakers.abandoned(target.id)
                raise
            if call.trace is not None:
                call.trace.answered(response.status, perf_counter())
            if response.status < 500:
                breakers.succeeded(target.id)
                return target, response, crossing
            breakers.server_error(target.id, f"answered with status {response.status}")
            if not self._may_retry(call):
                return target, response, crossing  # the last failure: the client sees the answer
            response.close()
            message = f"backend {target.id} answered with status {response.status}; trying another"
            log.warning("request %s: %s", call.request_id, message)
            failure = self._failed(call, target, UpstreamError(message))
        assert failure is not None  # a loop that ends without returning failed at least once
        raise failure  # the last one; the ones before it only cost a failover

    async def _forward(self, call: Call, send: Send) -> None:
        target, response, crossing = await self._open(call)
        while True:
            if isinstance(response, LocalReply):
                call.relay = "local"
                call.guard.finishing = True
                await send_local(send, response, self._headers(call, target))
                return
            call.relay = "passthrough" if crossing is None else "translated"
            try:
                await self._deliver(call, send, target, response, crossing)
                return
            except AnswerTooLarge as exc:  # no failure of the backend's: another would answer alike
                log.warning("request %s: %s", call.request_id, exc.logged)
                raise
            except UpstreamError as exc:  # _deliver raises it only before any byte went out
                log.warning("request %s: %s", call.request_id, exc.logged)
                self._breakers.server_error(target.id, exc.message)
                if not self._may_retry(call):
                    raise
                call.tried += (target,)  # _deliver gave its slot back
                target, response, crossing = await self._attempt(call, exc)

    async def _deliver(
        self,
        call: Call,
        send: Send,
        target: Target,
        response: UpstreamResponse,
        crossing: Crossing | None,
    ) -> None:
        """Relay ``response``; raises ``UpstreamError`` only if nothing went to the client yet."""
        complete = False
        try:
            headers = self._headers(call, target)
            if crossing is not None:
                complete = await relay(
                    crossing, response, send, call.guard, target.id, headers, self._max_translated_body
                )
            else:
                meter = call.meter  # chunks go to the client's own send; the guard notes them
                out, guard = (send if meter is None else meter.send), call.guard
                try:
                    complete = await pass_through(response, out, guard, target.id, call.request_id, headers)
                finally:
                    if meter is not None:
                        meter.passed(guard)
        finally:
            if complete:
                response.release()
            else:
                response.close()  # drop the connection: the backend sees it and stops working
            self._release(target)
