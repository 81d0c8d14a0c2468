"""Requests that cross between API formats: the client speaks one, the chosen backend the other.

The pure ``dataplane.translate`` exchange rewrites bodies; this module does its I/O around one
upstream response: an error reply or a whole reply is read (up to ``OLLAMAFLOW_MAX_TRANSLATED_BODY``;
a larger one is a 502 in the client's format naming the limit, and the backend's connection is
dropped) and rewritten, a stream is fed through the exchange's translator chunk by chunk as it
arrives. A stream the backend breaks off ends with the client format's own error line or event (the
translator writes it), never a faked end.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from dataplane.http.responses import JSON
from dataplane.http.stream_framing import framing_of
from dataplane.proxy.client_stream import ClientStream
from dataplane.translate.common import BackendCall
from dataplane.translate.exchanges import Exchange
from dataplane.upstream.transport import CLIENT_ERRORS, AnswerTooLarge, UpstreamResponse, upstream_error

__all__ = ["Crossing", "relay"]

log = logging.getLogger("ollamaflow.dataplane.crossing")


@dataclass(frozen=True, slots=True)
class Crossing:
    """One translated attempt: the exchange, and what it made of the client's request."""

    exchange: Exchange
    backend_call: BackendCall
    started_ns: int


async def _read(response: UpstreamResponse, backend: str, limit: int) -> bytes:
    try:
        return await response.read(limit)
    except CLIENT_ERRORS as exc:
        error = upstream_error(backend, exc)
        if isinstance(error, AnswerTooLarge):
            error = AnswerTooLarge(
                f"the answer of backend {backend} is too large to translate: over {limit} bytes "
                "(OLLAMAFLOW_MAX_TRANSLATED_BODY)"
            )
        raise error from exc


async def relay(
    crossing: Crossing,
    response: UpstreamResponse,
    stream: ClientStream,
    backend: str,
    headers: list[tuple[bytes, bytes]],
    limit: int,
) -> bool:
    """Send the backend's answer to the client in the client's format; True if it arrived whole.

    Raises ``UpstreamError`` or ``Untranslatable`` only before anything went to the client; a whole
    answer (or error answer) over ``limit`` bytes raises ``AnswerTooLarge``.
    """
    exchange, backend_call = crossing.exchange, crossing.backend_call
    send, guard = stream.send, stream.guard
    if not 200 <= response.status < 300:
        status, body = exchange.error(response.status, await _read(response, backend, limit))
        await stream.whole(status, body, JSON, headers)
        return True
    if not backend_call.stream:
        data = await _read(response, backend, limit)
        body = exchange.reply(backend_call, data, started_ns=crossing.started_ns, now_ns=time.time_ns())
        await stream.whole(200, body, JSON, headers)
        return True
    translator = exchange.stream(backend_call, started_ns=crossing.started_ns)
    content_type = exchange.stream_content_type.encode()
    start_headers = [(b"content-type", content_type), *headers]
    guard.status = 200  # noted before it goes, as every sender does
    await send({"type": "http.response.start", "status": 200, "headers": start_headers})
    guard.framing = framing_of(content_type)  # the client's own: what a drain that ends it can say
    whole = True
    try:
        async for chunk in response.iter_chunks():
            out = translator.feed(chunk, time.time_ns())
            if out:
                data = b"".join(out)
                guard.chunk(data)
                await send({"type": "http.response.body", "body": data, "more_body": True})
    except CLIENT_ERRORS as error:
        log.warning("stream from backend %s broke off: %s", backend, upstream_error(backend, error).logged)
        whole = False
    await stream.finish({"type": "http.response.body", "body": b"".join(translator.close(time.time_ns()))})
    return whole
