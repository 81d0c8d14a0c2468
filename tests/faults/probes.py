"""What a fault case watches beside the steady load: streams that the fault cuts mid-way, and admin API
traffic through an outage."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import ollama
import openai

from tests.faults.harness import CHAT, GENERATE, REQUEST_TIMEOUT, eventually

__all__ = ["AdminTraffic", "StreamProbe", "mid_way"]

PROMPT = str(GENERATE["prompt"])


@dataclass
class StreamProbe:
    """One streamed chat (``kind`` "generate": a streamed Ollama /api/generate or OpenAI /v1/completions)
    through an official client, run in a thread: whether its first chunk came, and how it ended.

    ``ending`` is "done" (a complete answer), "error" (the client format's in-band error: the ollama
    client raises ``ResponseError`` on Ollama's error line, openai-python ``APIError`` on the error
    event), or what else happened: "cut without error", "timeout" (a hang), another exception.
    """

    url: str
    api: str  # "ollama" or "openai"
    host: str | None = None
    kind: str = "chat"  # or "generate"
    first_chunk: threading.Event = field(default_factory=threading.Event)
    ending: str = ""
    chunks: int = 0
    error: str = ""
    _thread: threading.Thread | None = None

    @property
    def label(self) -> str:
        return f"{self.api} {self.kind} via {self.host or 'any host'}"

    def start(self) -> StreamProbe:
        self._thread = threading.Thread(target=self._run, name=f"stream-{self.api}", daemon=True)
        self._thread.start()
        return self

    def wait(self, timeout: float = REQUEST_TIMEOUT + 5) -> str:
        assert self._thread is not None
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"the {self.api} stream hangs"
        return self.ending

    def _run(self) -> None:
        headers = {"Host": self.host} if self.host else {}
        try:
            if self.api == "ollama":
                self.ending = self._ollama(headers)
            else:
                self.ending = self._openai(headers)
        except (httpx.TimeoutException, openai.APITimeoutError) as exc:
            self.ending, self.error = "timeout", str(exc)
        except (httpx.TransportError, openai.APIConnectionError) as exc:  # cut without a word
            self.ending, self.error = "connection broken", str(exc)
        except (ollama.ResponseError, openai.APIError) as exc:  # the in-band error line or event
            self.ending, self.error = "error", str(exc)
        except Exception as exc:
            self.ending, self.error = type(exc).__name__, str(exc)

    def _ollama(self, headers: dict[str, str]) -> str:
        client = ollama.Client(host=self.url, headers=headers, timeout=REQUEST_TIMEOUT)
        if self.kind == "chat":
            parts: Iterator[Any] = client.chat(model="llama3.2", messages=CHAT, stream=True)
        else:
            parts = client.generate(model="llama3.2", prompt=PROMPT, stream=True)
        last = None
        for part in parts:
            self.chunks += 1
            self.first_chunk.set()
            last = part
        return "done" if last is not None and last.done else "cut without error"

    def _openai(self, headers: dict[str, str]) -> str:
        client = openai.OpenAI(
            base_url=self.url + "/v1",
            api_key="unused",
            default_headers=headers,
            max_retries=0,
            timeout=REQUEST_TIMEOUT,
        )
        if self.kind == "chat":
            stream: Any = client.chat.completions.create(model="llama3.2", messages=CHAT, stream=True)  # type: ignore[arg-type]
        else:
            stream = client.completions.create(model="llama3.2", prompt=PROMPT, stream=True)
        finished = False
        with stream:
            for chunk in stream:
                self.chunks += 1
                self.first_chunk.set()
                finished = finished or any(c.finish_reason for c in chunk.choices)
        return "done" if finished else "cut without error"


def mid_way(streams: list[StreamProbe], within: float = 10.0) -> None:
    """Wait until every stream has had its first chunk, and check that none has ended yet."""
    for stream in streams:
        assert stream.first_chunk.wait(within), f"{stream.label} did not start: {stream.error}"
    ended = [(stream.label, stream.ending) for stream in streams if stream.ending]
    assert not ended, f"streams ended before the fault: {ended}"


class AdminTraffic:
    """Admin API traffic, back to back in a thread, with every answer kept: (time, what, status), status
    0 for no answer at all. Each round creates a frontend over ``backend``, then makes one more call,
    taking the admin API's routes in turn (reads and writes of each collection, health, models, the
    cluster views, a route explanation)."""

    def __init__(self, admin: httpx.Client, backend: str) -> None:
        self._admin = admin
        self._backend = backend
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="admin-traffic", daemon=True)
        self.answers: list[tuple[float, str, int]] = []
        self.created: list[str] = []  # frontends whose creation was acknowledged (201)

    def _calls(self, frontend: str) -> list[tuple[str, str, dict[str, object] | None]]:
        """(method, path, JSON body) of the other routes, about ``frontend``."""
        backend = self._backend
        return [
            ("GET", "/v1.0/frontends", None),
            ("GET", f"/v1.0/frontends/{frontend}", None),
            ("HEAD", f"/v1.0/frontends/{frontend}", None),
            ("PATCH", f"/v1.0/frontends/{frontend}", {"Name": "patched during the outage"}),
            ("POST", f"/v1.0/frontends/{frontend}/explain", {"Model": "llama3.2"}),
            ("GET", "/v1.0/backends", None),
            ("GET", f"/v1.0/backends/{backend}", None),
            ("PATCH", f"/v1.0/backends/{backend}", {"Name": backend}),
            ("GET", "/v1.0/backends/health", None),
            ("GET", f"/v1.0/backends/{backend}/health", None),
            ("GET", "/v1.0/models", None),
            ("GET", "/v1.0/pulls", None),
            ("GET", "/v1.0/apikeys", None),
            ("PUT", "/v1.0/apikeys", {"Identifier": f"key-{frontend}", "Frontends": [frontend]}),
            ("GET", "/v1.0/dataplanes", None),
            ("GET", "/v1.0/snapshot", None),
            ("DELETE", f"/v1.0/frontends/{frontend}-gone", None),
        ]

    def __enter__(self) -> AdminTraffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "the admin traffic hangs"

    def _run(self) -> None:
        count = 0
        while not self._stop.is_set():
            count += 1
            identifier = f"write-{self._backend}-{count}"
            host = f"{identifier}.example"
            body = {"Identifier": identifier, "Hostname": host, "Backends": [self._backend]}
            write = functools.partial(self._admin.put, "/v1.0/frontends", json=body)
            if self._send("PUT /v1.0/frontends", write) == 201:
                self.created.append(identifier)
            calls = self._calls(self.created[-1] if self.created else "main")
            method, path, json = calls[count % len(calls)]
            self._send(f"{method} {path}", functools.partial(self._admin.request, method, path, json=json))
            time.sleep(0.05)

    def _send(self, what: str, call: Callable[[], httpx.Response]) -> int:
        try:
            status = call().status_code
        except httpx.HTTPError:
            status = 0
        self.answers.append((time.monotonic(), what, status))
        return status

    @property
    def unavailable(self) -> int:
        return sum(1 for _, _, status in self.answers if status == 503)

    def unexpected(self) -> list[tuple[float, str, int]]:
        """Answers other than success, 404 (the DELETE of a frontend that never was) or 503: a 500, or
        none at all."""
        expected = {200, 201, 204, 503}
        return [
            (at, what, status)
            for at, what, status in self.answers
            if status not in expected and not (status == 404 and what.startswith("DELETE"))
        ]

    def wait_for_write(self, after: float, within: float = 30.0) -> float:
        """When the first write acknowledged after ``after`` was answered."""
        found: list[float] = []

        def acknowledged() -> bool:
            found.extend(t for t, what, status in list(self.answers) if t >= after and status == 201)
            return bool(found)

        eventually(acknowledged, f"a write acknowledged after {after:.1f}", within)
        return min(found)

    def missing(self) -> list[str]:
        """Acknowledged writes that are not there now."""
        return [i for i in self.created if self._admin.get(f"/v1.0/frontends/{i}").status_code != 200]

    def summary(self, missing: list[str]) -> str:
        kept = len(self.created) - len(missing)
        return (
            f"admin API: {self.unavailable} x 503, {len(self.unexpected())} x other; "
            f"{kept}/{len(self.created)} acknowledged writes kept"
        )
