"""What every fault case shares: steady client load with a log of each request's outcome, waiting with
a bound, and the matrix's result rows (``tests.faults.probes`` watches streams and the admin API).

The load runs in threads of this process while the cluster's parts are real child processes, so a
SIGKILL hits them exactly as a crash would. Each request's start, end, outcome and who served it is
kept; the figures reported are computed from that log afterwards:

- requests: how many were sent; failed: how many a client saw fail (after whatever retry the client
  itself does: none, or the other replica in case 2);
- longest gap: the longest time between two successful answers, anywhere in the run;
- recovery: from the moment the part could work again (restarted by the test, or the link back; under
  ``up``, which restarts it itself, from the kill) until it was seen doing its job again; each case
  says what that is.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

__all__ = [
    "FaultRow",
    "Load",
    "LoadReport",
    "Matrix",
    "Outcome",
    "chat",
    "eventually",
    "generate",
    "replicas",
    "spread",
]

GENERATE = {"model": "llama3.2", "prompt": "Why is the sky blue?", "stream": False}
CHAT = [{"role": "user", "content": "Tell me about the sky."}]
# A request that takes longer than this hangs, as far as the matrix is concerned.
REQUEST_TIMEOUT = 15.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """One request as its client saw it."""

    started: float  # time.monotonic()
    ended: float
    ok: bool
    detail: str  # why it failed, or how it went (status, retries)
    served_by: str = ""  # the backend (X-OllamaFlow-Backend) or replica that answered


# A request function: given the worker's own HTTP client and number, send one request.
Request = Callable[[httpx.Client, int], Outcome]


def generate(url: str, host: str | None = None) -> Request:
    """A non-streamed Ollama /api/generate through the data plane at ``url``."""
    return _post(url + "/api/generate", GENERATE, host)


def chat(url: str, host: str | None = None) -> Request:
    """A non-streamed OpenAI /v1/chat/completions through the data plane at ``url``."""
    return _post(url + "/v1/chat/completions", {"model": "llama3.2", "messages": CHAT, "stream": False}, host)


def _post(url: str, body: dict[str, object], host: str | None) -> Request:
    headers = {"Host": host} if host else {}

    def send(client: httpx.Client, worker: int) -> Outcome:
        started = time.monotonic()
        try:
            response = client.post(url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            return Outcome(started, time.monotonic(), False, f"{type(exc).__name__}: {exc}")
        return _answered(started, response, response.headers.get("x-ollamaflow-backend", ""))

    return send


def spread(*requests: Request) -> Request:
    """Worker ``i`` sends ``requests[i % len(requests)]``: load on several data planes at once."""

    def send(client: httpx.Client, worker: int) -> Outcome:
        return requests[worker % len(requests)](client, worker)

    return send


def replicas(urls: list[str]) -> Request:
    """/api/generate over several data-plane replicas, as an edge proxy like nginx spreads them: each
    worker has a replica of its own; a request that gets no answer byte from it (connection refused,
    or closed before the answer) is sent to the next one. ``served_by`` names the replica (its index)."""

    def send(client: httpx.Client, worker: int) -> Outcome:
        started = time.monotonic()
        retried: list[str] = []
        for attempt in range(len(urls)):
            index = (worker + attempt) % len(urls)
            try:
                response = client.post(urls[index] + "/api/generate", json=GENERATE)
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
                retried.append(f"replica {index}: {type(exc).__name__}")
                continue
            except httpx.HTTPError as exc:  # a timeout: the request may be running; no retry
                return Outcome(started, time.monotonic(), False, f"{type(exc).__name__}: {exc}")
            outcome = _answered(started, response, str(index))
            if retried:
                outcome = Outcome(
                    outcome.started,
                    outcome.ended,
                    outcome.ok,
                    "retried: " + "; ".join(retried),
                    outcome.served_by,
                )
            return outcome
        return Outcome(started, time.monotonic(), False, "no replica answered: " + "; ".join(retried))

    return send


def _answered(started: float, response: httpx.Response, served_by: str) -> Outcome:
    ended = time.monotonic()
    if response.status_code != 200:
        return Outcome(
            started, ended, False, f"HTTP {response.status_code}: {response.text[:200]}", served_by
        )
    try:
        body = response.json()
    except ValueError:
        return Outcome(started, ended, False, f"not JSON: {response.text[:200]}", served_by)
    if "choices" in body:  # OpenAI
        choice = (body["choices"] or [{}])[0]
        complete = bool(choice.get("finish_reason")) and bool(choice.get("message", {}).get("content"))
    else:  # Ollama
        complete = body.get("done") is True and bool(body.get("response"))
    if not complete:
        return Outcome(started, ended, False, f"incomplete answer: {response.text[:200]}", served_by)
    return Outcome(started, ended, True, "200", served_by)


@dataclass(frozen=True, slots=True)
class LoadReport:
    outcomes: list[Outcome]

    @property
    def sent(self) -> int:
        return len(self.outcomes)

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def longest_gap(self) -> float:
        """The longest time between two successful answers (0 with fewer than two)."""
        ends = sorted(o.ended for o in self.outcomes if o.ok)
        return max((b - a for a, b in itertools.pairwise(ends)), default=0.0)

    def in_flight_at(self, moment: float) -> int:
        return sum(1 for o in self.outcomes if o.started <= moment < o.ended)

    def first_success(self, after: float, served_by: str | None = None) -> float | None:
        """When the first successful answer (from ``served_by``, if given) that started after ``after``
        ended."""
        ends = [
            o.ended
            for o in self.outcomes
            if o.ok and o.started >= after and (served_by is None or o.served_by == served_by)
        ]
        return min(ends, default=None)

    def describe_failures(self, limit: int = 5) -> str:
        return "\n".join(f"  after {o.started:.2f}: {o.detail}" for o in self.failures[:limit])


class Load:
    """``workers`` threads, each sending ``request`` back to back with its own keep-alive client, from
    ``start()`` until ``stop()``."""

    def __init__(self, request: Request, *, workers: int = 4) -> None:
        self._request = request
        self._workers = workers
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._outcomes: list[Outcome] = []
        self._threads: list[threading.Thread] = []

    def start(self) -> Load:
        for worker in range(self._workers):
            thread = threading.Thread(target=self._run, args=(worker,), name=f"load-{worker}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _run(self, worker: int) -> None:
        with httpx.Client(timeout=REQUEST_TIMEOUT) as client:
            while not self._stop.is_set():
                outcome = self._request(client, worker)
                with self._lock:
                    self._outcomes.append(outcome)
                if not outcome.ok:
                    time.sleep(0.05)  # a client that failed does not spin

    def snapshot(self) -> LoadReport:
        with self._lock:
            return LoadReport(list(self._outcomes))

    def stop(self) -> LoadReport:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=REQUEST_TIMEOUT + 5)
            assert not thread.is_alive(), "a load worker did not stop"
        return self.snapshot()

    def __enter__(self) -> Load:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()  # also where a case failed before it took the report

    def wait_for_success(self, served_by: str, after: float, within: float) -> float:
        """The time of the first successful answer from ``served_by`` that started after ``after``."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            found = self.snapshot().first_success(after, served_by)
            if found is not None:
                return found
            time.sleep(0.1)
        raise AssertionError(f"no successful answer from {served_by} within {within:.0f} s")


def eventually(check: Callable[[], bool], what: str, within: float = 30.0, every: float = 0.1) -> float:
    """Poll ``check`` (HTTP errors count as "not yet") until it holds; the time.monotonic() it did."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if check():
                return time.monotonic()
        time.sleep(every)
    raise AssertionError(f"{what} did not happen within {within:.0f} s")


@dataclass(frozen=True, slots=True)
class FaultRow:
    """One line of the matrix."""

    case: str
    mode: str
    requests: int
    failed: int
    longest_gap: float  # seconds
    recovery: float  # seconds
    note: str = ""

    @classmethod
    def of(cls, case: str, mode: str, report: LoadReport, recovery: float, note: str = "") -> FaultRow:
        return cls(case, mode, report.sent, report.failed, report.longest_gap, recovery, note)

    def cells(self) -> list[str]:
        return [
            self.case,
            self.mode,
            str(self.requests),
            str(self.failed),
            f"{self.longest_gap:.2f} s",
            f"{self.recovery:.2f} s",
            self.note,
        ]


HEADINGS = ["case", "mode", "requests", "failed", "longest gap", "recovery", "note"]


@dataclass
class Matrix:
    """The rows of this session, also appended to ``path`` (tab-separated) as each case ends."""

    path: Path
    rows: list[FaultRow] = field(default_factory=list)

    def record(self, row: FaultRow) -> None:
        self.rows.append(row)
        new = not self.path.exists()
        with self.path.open("a") as out:
            if new:
                out.write("\t".join(HEADINGS) + "\n")
            out.write("\t".join(row.cells()) + "\n")
        print(f"\nfault matrix: {' | '.join(row.cells())}")

    def table(self) -> str:
        lines = [HEADINGS, *(row.cells() for row in self.rows)]
        widths = [max(len(line[i]) for line in lines) for i in range(len(HEADINGS))]
        text = [
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
            for line in lines
        ]
        text.insert(1, "  ".join("-" * width for width in widths))
        return "\n".join(text)
