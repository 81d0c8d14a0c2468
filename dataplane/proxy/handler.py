"""The proxied request, start to end: accept, route, attempt, deliver.

``Proxy.handle`` reads as the request's life: ``_accept`` reads the request (frontend, body, model,
the backends that may have it), ``_route`` orders them (``dataplane.routing.table``) and plans the failover
among them (``dataplane.proxy.failover``), ``_attempts`` tries them in turn, each try an ``Attempt``
(``dataplane.proxy.attempt``) that holds its backend's slot and settles its breaker once, and ``_deliver``
relays the answer; errors go back through the request's ``ClientStream`` (``dataplane.proxy.client_stream``).

Stream chunks go to the client as they arrive. A client that disconnects cancels the request task,
which closes the upstream connection, so the backend stops generating. Errors before the first byte
become the client's API error shape with their status; after it, an NDJSON stream ends with Ollama's
``{"error": ...}`` line and an SSE stream with OpenAI's error event. A backend of the other API
format gets the request translated (``dataplane.proxy.crossing``); the same format passes through untouched.
Backends this process saw refuse connections or fail repeatedly are passed over while their circuit
breaker (``dataplane.limits.breaker``) is open. Each backend takes only this data plane's share of its limits
(``dataplane.limits.admission``): the rest wait in the frontend's queue. A refused or reset connection, a
timeout or a 5xx answer before any byte went to the client is retried on the next candidate backend
(``dataplane.proxy.failover``, when the frontend allows retries); the client gets the last failure.

Answers of any size pass through with bounded memory (``dataplane.proxy.passthrough``). The upstream
client is any ``dataplane.upstream.transport.Transport``; the frontend's ``TimeoutMs`` is its time limit
("no progress for TimeoutMs", see that module). When the data plane stops, requests run on until its
drain timeout; those still running then end in their client's format (``dataplane.drain``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial
from time import perf_counter
from typing import Any

from dataplane.drain import Drain, drained_message, end_answer
from dataplane.http.disconnect import DisconnectWatch
from dataplane.http.headers import read_client_headers
from dataplane.http.incoming import BodyReader, ClientGone, Receive, read_model_request
from dataplane.http.request_context import ID_HEADER, new_request_id, running_task
from dataplane.http.responses import JSON, Send, send_bytes, send_failure
from dataplane.limits.access import Access
from dataplane.limits.admission import Admission, QueueRejected
from dataplane.limits.breaker import Breakers
from dataplane.limits.traffic import Traffic
from dataplane.observe.ended import EarlyAnswer, Ended
from dataplane.observe.tracing import RequestTrace, Tracing
from dataplane.proxy.answer_headers import answer_headers, error_headers
from dataplane.proxy.attempt import Attempt
from dataplane.proxy.call import Call, Endpoint, own_lines, upstream_request
from dataplane.proxy.client_stream import ClientStream
from dataplane.proxy.crossing import Crossing, relay
from dataplane.proxy.failover import Failover, candidates, spare_trials
from dataplane.proxy.passthrough import pass_through
from dataplane.routing.model_errors import Unservable
from dataplane.routing.pins import with_model
from dataplane.routing.sticky import session_key
from dataplane.routing.table import Target
from dataplane.state import SnapshotState
from dataplane.translate.common import LocalReply
from dataplane.translate.exchanges import Translations
from dataplane.upstream.transport import (
    AnswerTooLarge,
    PoolTimeout,
    RequestNotSent,
    Transport,
    UpstreamResponse,
)
from shared.errors import OllamaFlowError, UpstreamError

__all__ = ["Endpoint", "Proxy"]

log = logging.getLogger("ollamaflow.dataplane.proxy")

# The answer a request that was not accepted gets, written to the send it is given.
Refusal = Callable[[Send], Awaitable[None]]


async def _no_answer(send: Send) -> None:
    """A client that left before its body arrived gets none."""


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
        observe: Callable[[Ended], None] | None = None,
        live: set[Call] | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        """``observe`` (metrics, access log) gets each request once it ended: its ``Call``, or the
        ``EarlyAnswer`` it got before it was accepted; ``live`` holds the accepted requests under way.
        Without ``observe`` nothing is measured."""
        self._observe = observe
        self._tracing = (
            tracing  # spans per request (dataplane.observe.tracing); needs ``observe`` to end them
        )
        self._live: set[Call] = live if live is not None else set()
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
        """Accept the request, route it, make its attempts, deliver the answer; or answer its error.
        Measured, it is observed once it ended, however it ended: what went out is noted on its
        guard as it goes (``dataplane.http.sent``), so the client's ``send`` is not wrapped."""
        started = perf_counter()
        trace = None if self._tracing is None else self._tracing.start(scope["headers"], endpoint, started)
        task = running_task()  # the drain and the disconnect watch both need it
        call = await self._accept(scope, receive, send, endpoint, started, trace, task)
        if call is None:
            return
        observe = self._observe
        if observe is None:
            await self._serve(call, send, task)
            return
        live = self._live
        live.add(call)
        try:
            await self._serve(call, send, task)
        finally:
            live.discard(call)
            call.ended_at = perf_counter()
            observe(call)

    async def _serve(self, call: Call, send: Send, task: asyncio.Task[Any]) -> None:
        """Route the accepted ``call``, make its attempts, deliver the answer; or answer its error."""
        stream = ClientStream(send, call.guard, call.endpoint.api_format)
        drain = self._drain
        drain.enter(task, call.guard)  # what went out, should the drain have to end it
        try:
            self._route(call)
            await self._attempts(call, stream)
        except QueueRejected as exc:
            self._traffic.rejected_total += 1
            call.rejected = True
            log.debug("request %s: %s", call.request_id, exc.message)  # counted in the reports instead
            await stream.rejected(exc, self._error_headers(call, routed=False))
        except OllamaFlowError as exc:  # only raised before the response started
            if not isinstance(exc, UpstreamError):  # _attempt logged those already
                log.debug("request %s: %s", call.request_id, exc.message)  # the client hears it; no log flood
            await stream.failure(exc, call.request_id, self._error_headers(call))
        except asyncio.CancelledError:
            if call.guard.client_gone:
                task.uncancel()
                log.debug("request %s: the client went away; upstream request cancelled", call.request_id)
            elif drain.ended(task):
                task.uncancel()
                log.debug("request %s: ended by the drain timeout (the data plane stops)", call.request_id)
                message = drained_message(call.request_id)
                await stream.drained(message, self._error_headers(call, routed=False))
            else:
                raise
        finally:
            call.guard.close()

    async def _accept(
        self,
        scope: MutableMapping[str, Any],
        receive: Receive,
        send: Send,
        endpoint: Endpoint,
        started: float,
        trace: RequestTrace | None,
        task: asyncio.Task[Any],
    ) -> Call | None:
        """Read the request: its frontend, body, model and the backends that may serve it. None when
        it was answered already (refused, or a body no backend could parse) or its client left."""
        client = read_client_headers(scope["headers"])
        # The client's X-Request-ID (or traceparent's trace id) when valid.
        request_id = client.request_id or new_request_id()
        id_header = (ID_HEADER, request_id.encode())
        frontend_id = model = ""
        try:
            route = self._state.table.frontend_for(client.host)
            frontend_id = route.frontend.id
            pool = route.pool(endpoint.kind)
            body = await self._bodies.json(
                receive, client.content_length, route.frontend.max_request_body_size
            )
            model = read_model_request(body).model_name  # rejects bodies no backend could parse
            if route.pinned_models:
                pinned_model = route.pinned_models.get(endpoint.kind)
                if pinned_model and pinned_model != model:  # route as if the client had asked for it
                    body, model = with_model(body, pinned_model), pinned_model
            choices = pool.choices(model)
            if client.label:
                choices = pool.labelled(choices, client.label)
        except ClientGone:
            log.debug("request %s: the client went away before sending its body", request_id)
            refusal: Refusal | None = _no_answer
        except Unservable as exc:
            body = exc.body(endpoint.api_format)
            headers = [id_header, *exc.headers]
            refusal = partial(send_bytes, status=exc.status, body=body, content_type=JSON, headers=headers)
        except OllamaFlowError as exc:
            if exc.status == 400:  # a body no backend could parse: counted, not logged (no log floods)
                self._traffic.client_errors["bad_request"] += 1
            refusal = partial(send_failure, api_format=endpoint.api_format, exc=exc, headers=[id_header])
        except BaseException:  # cancelled while reading (a drain that ends it) or a fault: still observed
            self._observe_early(EarlyAnswer(send, endpoint, started, request_id, frontend_id, model, trace))
            raise
        else:
            refusal = None
            if self._drain.ending:  # arrived after the drain timeout: no backend sees it
                message, api_format, headers = drained_message(request_id), endpoint.api_format, [id_header]
                refusal = partial(
                    end_answer, answer=None, api_format=api_format, message=message, headers=headers
                )
        if refusal is not None:
            early = EarlyAnswer(send, endpoint, started, request_id, frontend_id, model, trace)
            await self._refuse(refusal, early)
            return None
        self._traffic.requests_total += 1
        peer = scope.get("client")
        forwarded_for = client.forwarded_for
        if peer:  # the client's own address joins the chain
            address = peer[0].encode("latin-1")
            forwarded_for = forwarded_for + b", " + address if forwarded_for else address
        return Call(
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
            started=started,
            frontend_id=frontend_id,
            sticky_key=session_key(client.forward, route.sticky_headers) if route.sticky_headers else None,
            explain=client.explain and self._access.explain_allowed(route, scope["headers"]),
            trace=trace,
        )

    async def _refuse(self, refusal: Refusal, early: EarlyAnswer) -> None:
        """Answer a request that was not accepted with ``refusal``, through ``early`` when measured,
        and observe it however that went."""
        if self._observe is None:
            await refusal(early.send)
            return
        try:
            await refusal(early.noted)
        finally:
            self._observe_early(early)

    def _observe_early(self, early: EarlyAnswer) -> None:
        if self._observe is not None:
            early.ended_at = perf_counter()
            self._observe(early)

    def _route(self, call: Call) -> None:
        """Order the candidates (the strategy's order; backends whose breaker is open left out) and
        plan the failover among them."""
        key = call.sticky_key
        now = time.monotonic() if key is not None else 0.0  # ages the memory of moved sessions
        in_flight, limits = self._traffic.in_flight, self._admission.gates.limits
        decision = call.pool.order(
            call.choices, model=call.model, in_flight=in_flight, limits=limits, sticky_key=key, now=now
        )
        if call.explain:
            call.decision = decision
        call.failover = Failover.plan(
            candidates(decision.order, self._breakers), allow_retries=call.route.frontend.allow_retries
        )

    async def _attempts(self, call: Call, stream: ClientStream) -> None:
        """Attempt the candidates in turn (``_attempt``, which delivers the answer) until one answered
        the client; the client gets the last failure: a 5xx answer is relayed, an error raised."""
        failover = call.failover
        assert failover is not None
        while True:
            target = await self._admit(call, failover.remaining())
            failover.started()
            call.served = target
            async with Attempt(target, self._traffic, self._admission, self._breakers) as attempt:
                failure = await self._attempt(call, stream, attempt, failover)
            if failure is None:
                return
            if not failover.remaining():
                raise failure  # the last one; the ones before it only cost a failover

    async def _admit(self, call: Call, candidates: tuple[Target, ...]) -> Target:
        """The first of ``candidates`` with room, waiting in the frontend's queue while none has."""
        admission = self._admission
        target = admission.admit(candidates)
        if not call.tried:  # the first attempt: the trial requests of those it did not pick go back
            spare_trials(self._breakers, candidates, target)
        if target is None:
            target, waited = await admission.wait(candidates, call.route.frontend)
            call.queued = max(call.queued, 0.0) + waited
        return target

    async def _attempt(
        self, call: Call, stream: ClientStream, attempt: Attempt, failover: Failover[Target]
    ) -> UpstreamError | None:
        """Send to ``attempt``'s backend and deliver its answer; the failure to fail over from, or
        None once the client was answered. Raises the failures no other backend can mend, and the
        last one that leaves nothing to fail over to if it came after the answer's head."""
        target = attempt.target
        crossing = self._crossing(call, target)
        if isinstance(crossing, LocalReply):
            attempt.end()  # no backend was asked: its slot goes back before the answer
            call.relay = "local"
            await stream.local(crossing, self._answer_headers(call, target))
            return None
        trace = call.trace
        if trace is not None:
            trace.attempt(target.id)
        head, body = upstream_request(call, target, crossing)
        try:
            response = await self._upstream.request(
                target.id, target.http.origin, head, body, call.route.read_timeout
            )
        except PoolTimeout:  # this data plane's connections are all taken: no backend's fault
            raise
        except RequestNotSent as exc:  # no connection: nothing was sent
            log.warning("request %s: %s", call.request_id, exc.logged)
            attempt.unreachable(exc.message)
            failover.failed(target)
            return exc
        except UpstreamError as exc:  # no answer in time, or the connection broke before one
            log.warning("request %s: %s", call.request_id, exc.logged)
            attempt.server_error(exc.message)
            failover.failed(target)
            return exc
        if trace is not None:
            trace.answered(response.status, perf_counter())
        if not attempt.answered(response.status) and failover.may_retry():
            response.close()
            message = f"backend {target.id} answered with status {response.status}; trying another"
            log.warning("request %s: %s", call.request_id, message)
            failover.failed(target)
            return UpstreamError(message)
        call.relay = "passthrough" if crossing is None else "translated"
        try:
            await self._deliver(call, stream, target, response, crossing)
        except AnswerTooLarge as exc:  # no failure of the backend's: another would answer alike
            log.warning("request %s: %s", call.request_id, exc.logged)
            raise
        except UpstreamError as exc:  # _deliver raises it only before any byte went out
            log.warning("request %s: %s", call.request_id, exc.logged)
            attempt.server_error(exc.message)
            if not failover.may_retry():
                raise
            failover.failed(target)
            return exc
        return None

    async def _deliver(
        self,
        call: Call,
        stream: ClientStream,
        target: Target,
        response: UpstreamResponse,
        crossing: Crossing | None,
    ) -> None:
        """Relay ``response``; raises ``UpstreamError`` only if nothing went to the client yet."""
        complete = False
        try:
            headers = self._answer_headers(call, target)
            if crossing is not None:
                complete = await relay(
                    crossing, response, stream, target.id, headers, self._max_translated_body
                )
            else:
                complete = await pass_through(response, stream, target.id, call.request_id, headers)
        finally:
            if complete:
                response.release()
            else:
                response.close()  # drop the connection: the backend sees it and stops working

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

    def _answer_headers(self, call: Call, target: Target) -> list[tuple[bytes, bytes]]:
        return answer_headers(call, target, self._traffic.in_flight, self._admission.gates)

    def _error_headers(self, call: Call, *, routed: bool = True) -> list[tuple[bytes, bytes]]:
        return error_headers(call, self._traffic.in_flight, self._admission.gates, routed=routed)
