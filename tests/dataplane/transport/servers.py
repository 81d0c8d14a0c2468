"""Raw asyncio HTTP servers a test scripts byte by byte, so that they can misbehave at will.

Each connection runs the test's script; the ``Server`` counts connections, requests and body bytes
written, and says when a connection ended (the client dropped it, or the script finished).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from dataplane.upstream.origin import Origin, prepare

__all__ = [
    "OK",
    "Script",
    "Server",
    "body_of",
    "full_backlog",
    "keep_alive_ok",
    "read_request",
    "request_head",
    "scripted",
    "write_body",
]

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Server"], Awaitable[None]]

OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'


@dataclass
class Server:
    url: str = ""
    host: str = "127.0.0.1"
    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    requests: list[bytes] = field(default_factory=list)
    written: int = 0  # body bytes handed to the socket by ``write_body``
    ended: int = 0  # connections over
    closed: asyncio.Event = field(default_factory=asyncio.Event)


async def read_request(reader: asyncio.StreamReader, server: Server) -> bool:
    """Read one request (head and Content-Length body); False at the end of the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return False
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    server.requests.append(head + await reader.readexactly(length))
    return True


def body_of(size: int) -> bytes:
    """``size`` bytes that show a missing, repeated or shuffled piece."""
    pattern = bytes(range(251))  # a prime length: pieces of any power-of-two size differ
    return (pattern * (size // len(pattern) + 1))[:size]


async def write_body(
    writer: asyncio.StreamWriter, server: Server, body: bytes, framing: str, piece: int = 65536
) -> None:
    """A 200 answer carrying ``body`` sized, chunked or until the connection ends ("eof")."""
    if framing == "sized":
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
    elif framing == "chunked":
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    else:
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
    for start in range(0, len(body), piece):
        part = body[start : start + piece]
        writer.write(b"%x\r\n%s\r\n" % (len(part), part) if framing == "chunked" else part)
        await writer.drain()
        server.written += len(part)
    if framing == "chunked":
        writer.write(b"0\r\n\r\n")
    await writer.drain()
    if framing == "eof":
        writer.close()


async def keep_alive_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
    while await read_request(reader, server):
        writer.write(OK)
        await writer.drain()


@contextlib.asynccontextmanager
async def scripted(
    script: Script, *, tls: ssl.SSLContext | None = None, host: str = "127.0.0.1"
) -> AsyncIterator[Server]:
    """Serve ``script`` on a free loopback port (https with ``tls``; ``host`` names it in the URL)."""
    server = Server(host=host)
    handlers: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        server.connections += 1
        server.open_now += 1
        server.most_open = max(server.most_open, server.open_now)
        try:
            await script(reader, writer, server)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            server.open_now -= 1
            server.ended += 1
            writer.close()
            server.closed.set()
            handlers.discard(task)

    listener = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    scheme = "https" if tls is not None else "http"
    server.url = f"{scheme}://{host}:{listener.sockets[0].getsockname()[1]}"
    try:
        yield server
    finally:
        listener.close()
        for task in list(handlers):  # scripts still waiting (a silent backend) end with the test
            task.cancel()
        for task in list(handlers):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await listener.wait_closed()


def request_head(
    url: str, body: bytes, method: bytes = b"POST", path: bytes = b"/api/chat"
) -> tuple[Origin, bytes]:
    """The origin and serialised head of a request to ``url``, as the data plane writes one."""
    backend = prepare(url, [("X-Team", "blue")], "")
    head = b"%s %s HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n" % (method, path, backend.fixed_lines, len(body))
    return backend.origin, head


@contextlib.contextmanager
def full_backlog() -> Iterator[str]:
    """A listener that never completes a handshake: its accept queue is full (loopback, Linux), so
    further SYNs are dropped and a connect hangs until its caller gives up."""
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    fillers = []
    try:
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(full.getsockname())
            fillers.append(filler)
        yield f"http://127.0.0.1:{full.getsockname()[1]}"
    finally:
        for sock in [*fillers, full]:
            sock.close()
