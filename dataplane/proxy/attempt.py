"""One attempt of one request on one backend: the backend's slot and its circuit breaker, settled once.

An ``Attempt`` holds the backend's slot from the moment admission gave it (``Traffic.started``, the
admission slot) until the attempt ends, and gives it back exactly once however it ends: answered,
failed over, cancelled (the client left, the drain), or an error of our own (translation, no pooled
connection). The breaker hears one verdict per attempt: a success when the backend answered below
500, a server error for a 5xx or an answer that never came whole, unreachable for a connection that
failed; an attempt that ends with none of these (no backend was asked, or nobody waited for its
answer) gives back the trial request it may have been (``Breakers.abandoned``).

A success is recorded as soon as the answer's head arrives, so that a trial request closes its
breaker at once rather than after a long stream; an answer that then breaks before anything of it
reached the client becomes a server error after all. A 5xx is counted once, even when its body then
breaks too.

Use it as ``async with Attempt(...) as attempt:``; ``end()`` gives the slot back earlier.
"""

from __future__ import annotations

from types import TracebackType

from dataplane.limits.admission import Admission
from dataplane.limits.breaker import Breakers
from dataplane.limits.traffic import Traffic
from dataplane.routing.table import Target

__all__ = ["Attempt"]

_SUCCEEDED, _FAILED = 1, 2


class Attempt:
    __slots__ = ("_admission", "_breakers", "_ended", "_traffic", "_verdict", "target")

    def __init__(self, target: Target, traffic: Traffic, admission: Admission, breakers: Breakers) -> None:
        """``target``'s admission slot is taken already (``Admission.admit``/``wait``); it is counted
        in flight from now on."""
        self.target = target
        self._traffic = traffic
        self._admission = admission
        self._breakers = breakers
        self._verdict = 0
        self._ended = False
        traffic.started(target.id)

    async def __aenter__(self) -> Attempt:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.end()

    def answered(self, status: int) -> bool:
        """The backend's answer began with ``status``; True if that is no server error."""
        if status < 500:
            self._verdict = _SUCCEEDED
            self._breakers.succeeded(self.target.id)
            return True
        self.server_error(f"answered with status {status}")
        return False

    def server_error(self, reason: str) -> None:
        """No answer in time, a 5xx, or an answer that broke before any of it reached the client."""
        if self._verdict != _FAILED:
            self._verdict = _FAILED
            self._breakers.server_error(self.target.id, reason)

    def unreachable(self, reason: str) -> None:
        """No connection: the request was never sent."""
        if not self._verdict:
            self._verdict = _FAILED
            self._breakers.unreachable(self.target.id, reason)

    def end(self) -> None:
        """Give the slot back (once); without a verdict, give back the trial request it may have been."""
        if self._ended:
            return
        self._ended = True
        backend = self.target.id
        if not self._verdict:
            self._breakers.abandoned(backend)
        self._traffic.finished(backend)
        self._admission.release(backend)
