"""Answers that need no translation: the backend's status, headers and body, relayed as they are.

The counterpart of ``dataplane.proxy.crossing`` for a backend of the client's own format. Answers of any
size pass with bounded memory: a small one (``WHOLE_BODY_LIMIT``) is read whole and written in one
go; anything else is relayed chunk by chunk as it arrives, each chunk handed to the client's
connection before the next is taken, so a slow client slows the backend down instead of filling
memory (the transport pauses reading meanwhile, and its time limit ends a request whose client took
nothing for TimeoutMs). A stream the backend breaks off ends with the client format's error line or
event, never a faked end.
"""

from __future__ import annotations

import logging
from time import perf_counter

from dataplane.http.headers import response_headers
from dataplane.http.stream_framing import error_tail, framing_of
from dataplane.proxy.client_stream import ClientStream
from dataplane.upstream.transport import CLIENT_ERRORS, UpstreamResponse, upstream_error

__all__ = ["WHOLE_BODY_LIMIT", "pass_through"]

log = logging.getLogger("ollamaflow.dataplane.proxy")

# A fixed-length upstream body up to this size is read whole and written in one go; a larger one is
# relayed as it arrives (below the transport's high-water mark, so reading it never pauses).
WHOLE_BODY_LIMIT = 64 * 1024


async def pass_through(
    response: UpstreamResponse,
    stream: ClientStream,
    backend: str,
    request_id: str,
    extra_headers: list[tuple[bytes, bytes]],
) -> bool:
    """Relay ``response`` to the client; True if it arrived whole.

    Raises ``UpstreamError`` only before anything went to the client (a small body that broke)."""
    send, guard = stream.send, stream.guard
    headers = response_headers(response.headers, extra_headers)
    start = {"type": "http.response.start", "status": response.status, "headers": headers}
    length = response.content_length
    if length is not None and length <= WHOLE_BODY_LIMIT:
        try:
            data = await response.read(WHOLE_BODY_LIMIT)
        except CLIENT_ERRORS as exc:
            raise upstream_error(backend, exc) from exc
        await stream.finish_whole(start, {"type": "http.response.body", "body": data})
        return True
    guard.status = response.status  # noted before it goes, as every sender does
    await send(start)
    guard.framing = framing_of(response.content_type)  # what a drain that must end it can say
    try:
        async for chunk in response.iter_chunks():
            if not guard.sent:  # guard.chunk(chunk), written out: a call less per chunk of a stream
                guard.first_at = perf_counter()
            guard.sent += len(chunk)
            guard.previous = guard.last
            guard.last = chunk
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except CLIENT_ERRORS as error:
        exc = upstream_error(backend, error)
        log.warning("request %s: the stream broke off: %s", request_id, exc.logged)
        tail = error_tail(guard.framing, exc.message, after=guard.last)
        if tail is None:
            return False  # no way to say it in-band: end without the last chunk, so the client sees it
        await stream.finish({"type": "http.response.body", "body": tail})
        return False
    await stream.finish({"type": "http.response.body", "body": b""})
    return True
