"""An answer's head and body leave the data plane in one write (``dataplane.http.write_cork``): the cork's
order and joining over a recording transport. (A real data plane's whole answer read in one piece is
in ``tests/dataplane/test_client_limits.py``.)"""

from __future__ import annotations

import asyncio

from dataplane.http.write_cork import Cork


class _Recording:
    """A transport that records what is written to it, and in which order."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.events: list[str] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.events.append("close")
        self.closing = True

    def write_eof(self) -> None:
        self.events.append("eof")

    def abort(self) -> None:
        self.events.append("abort")
        self.closing = True

    def get_extra_info(self, name: str) -> str:
        return "extra:" + name


def _cork(loop: asyncio.AbstractEventLoop) -> tuple[Cork, _Recording]:
    transport = _Recording()
    return Cork(transport, loop), transport  # type: ignore[arg-type]


async def test_a_head_and_a_whole_body_go_out_in_one_write() -> None:
    cork, transport = _cork(asyncio.get_running_loop())
    cork.arm()
    cork.write(b"HEAD\r\n\r\n")
    assert transport.writes == []
    cork.write(b"body")
    assert transport.writes == [b"HEAD\r\n\r\nbody"]
    cork.write(b"more")  # not armed: straight through
    assert transport.writes == [b"HEAD\r\n\r\nbody", b"more"]


async def test_a_held_head_goes_out_on_the_next_loop_turn_without_a_body() -> None:
    cork, transport = _cork(asyncio.get_running_loop())
    cork.arm()
    cork.write(b"HEAD")
    await asyncio.sleep(0)
    assert transport.writes == [b"HEAD"]
    cork.write(b"chunk")  # the first chunk of a stream, a turn later
    assert transport.writes == [b"HEAD", b"chunk"]


async def test_a_large_body_is_not_copied_to_be_joined() -> None:
    cork, transport = _cork(asyncio.get_running_loop())
    cork.arm()
    body = b"x" * 100_000
    cork.write(b"HEAD")
    cork.write(body)
    assert transport.writes == [b"HEAD", body]
    assert transport.writes[1] is body


async def test_close_and_eof_send_what_is_held_first_and_abort_drops_it() -> None:
    loop = asyncio.get_running_loop()
    cork, transport = _cork(loop)
    cork.arm()
    cork.write(b"HEAD")
    cork.write_eof()
    assert (transport.writes, transport.events) == ([b"HEAD"], ["eof"])
    cork.arm()
    cork.write(b"NEXT")
    cork.close()
    assert (transport.writes, transport.events) == ([b"HEAD", b"NEXT"], ["eof", "close"])

    cork, transport = _cork(loop)
    cork.arm()
    cork.write(b"HEAD")
    cork.abort()
    await asyncio.sleep(0)
    assert (transport.writes, transport.events) == ([], ["abort"])
    assert cork.get_extra_info("peername") == "extra:peername"  # the rest is the transport's


async def test_nothing_held_is_written_to_a_closing_transport() -> None:
    cork, transport = _cork(asyncio.get_running_loop())
    cork.arm()
    cork.write(b"HEAD")
    transport.closing = True
    await asyncio.sleep(0)
    assert transport.writes == []
