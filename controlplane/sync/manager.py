"""The model synchroniser: pulls each backend's missing RequiredModels, with progress and retries.

``apply`` hands it the configuration (required models per backend and the backends themselves);
``wake`` asks it to look again (e.g. after the monitor read new model lists). For every active,
healthy Ollama backend whose model list is known, each required model it lacks gets a PullJob and a
task. At most ``parallelism`` pulls run at once in total and ``per_backend`` on one backend; a
failed attempt is retried after ``retry_delay`` seconds, doubled each time (at most 5 minutes), up to
``max_attempts`` attempts, after which the job stays failed (with the backend's message) until the
model or the backend leaves and comes back, or the backend recovers from being unhealthy. Every
change of a job goes to the subscribers of ``events()`` (the live progress stream) and, as a
``PullProgress`` numbered in order, to ``on_progress`` (published on the bus for the data planes
that stream a client's /api/pull).

``hold`` pulls a model onto some backends without it being required (a client's /api/pull on a
frontend whose pulls do not add to RequiredModels): an in-memory requirement of this replica, held
until the job on that backend has succeeded or failed for good, then forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from datetime import timedelta
from typing import Protocol

import httpx
import msgspec

from controlplane.clock import Clock
from controlplane.health.monitor import REQUEST_ERRORS, Monitor, describe_error
from controlplane.health.targets import BackendTarget
from controlplane.sync.plan import PullJob, missing_models, unrequired_models, worth_restarting
from shared.models import model_key
from shared.wire.models import LayerProgress, PullProgress

__all__ = ["PullFailed", "PullObserver", "Synchroniser", "backend_error"]

log = logging.getLogger("ollamaflow.controlplane.sync")

_MAX_BACKOFF = 300.0
_PULL_TIMEOUT = httpx.Timeout(30.0, read=600.0)  # a pull may pause long between progress lines


class PullFailed(Exception):
    """A pull attempt failed; the message is the backend's own where it gave one."""


class _Error(msgspec.Struct):
    error: str = ""


def backend_error(body: bytes) -> str:
    with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
        return msgspec.json.decode(body, type=_Error).error
    return body.decode("utf-8", "replace").strip()[:500]


class PullObserver(Protocol):
    """Told how each pull attempt ends (the metrics, ``controlplane.metrics``)."""

    def pull_attempt_ended(self, backend: str, result: str, pulled_bytes: int) -> None:
        """``result``: done, retrying (it is tried again), failed (for good) or cancelled (no longer
        required); ``pulled_bytes``: what this attempt brought."""


class Synchroniser:
    """Brings RequiredModels onto Ollama backends."""

    def __init__(
        self,
        monitor: Monitor,
        *,
        clock: Clock,
        parallelism: int,
        per_backend: int,
        max_attempts: int,
        retry_delay: float,
        remove_unrequired: bool = False,
        enabled: bool = True,
    ) -> None:
        self._monitor = monitor
        self._clock = clock
        self._per_backend_limit = per_backend
        self._max_attempts = max_attempts
        self._retry_delay = retry_delay
        self._remove_unrequired = remove_unrequired
        self.enabled = enabled
        self._overall = asyncio.Semaphore(parallelism)
        self._per_backend: dict[str, asyncio.Semaphore] = {}
        self.required: dict[str, tuple[str, ...]] = {}
        # (backend id, model key) -> the model as asked: pulls held for a client, not configured.
        self._held: dict[tuple[str, str], str] = {}
        self.jobs: dict[tuple[str, str], PullJob] = {}
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._deleting: set[tuple[str, str]] = set()
        self._subscribers: set[asyncio.Queue[PullJob]] = set()
        self._targets: dict[str, BackendTarget] = {}
        # Names this synchroniser's PullProgress (one per replica) and numbers its updates in order.
        self.source = uuid.uuid4().hex[:12]
        self._seq = 0
        self._seqs: dict[tuple[str, str], int] = {}
        self.on_progress: Callable[[PullProgress], None] | None = None
        self.observer: PullObserver | None = None

    def apply(self, required: Mapping[str, tuple[str, ...]], targets: Mapping[str, BackendTarget]) -> None:
        """New configuration: required models per backend id, and the backends."""
        for ident, target in targets.items():
            old = self._targets.get(ident)
            if old is not None and old.probe_identity() != target.probe_identity():
                self._drop(lambda key, ident=ident: key[0] == ident)  # another server: start over
        self.required = dict(required)
        self._targets = dict(targets)
        for key in [k for k in self._held if k[0] not in targets]:
            del self._held[key]
        self.wake()

    @property
    def removes_unrequired(self) -> bool:
        return self._remove_unrequired

    def hold(self, idents: Iterable[str], model: str) -> None:
        """Pull ``model`` onto ``idents`` now without requiring it there: each hold lasts until the
        job on that backend ends (kept only where a job started, i.e. the backend lacks the model)."""
        key = model_key(model)
        wanted = [(ident, key) for ident in idents]
        for row in wanted:
            self._held.setdefault(row, model.strip())
        self.wake()
        for row in wanted:
            if row not in self._tasks:
                self._held.pop(row, None)

    def release(self, idents: Iterable[str], model: str) -> None:
        """Drop the holds of ``model`` on ``idents`` (it is being deleted); the next ``wake`` stops
        their jobs unless the configuration requires the model there."""
        key = model_key(model)
        for ident in idents:
            self._held.pop((ident, key), None)

    def _wanted_models(self) -> dict[str, tuple[str, ...]]:
        """Backend id -> the models it must have: the configured ones, then those held for clients."""
        if not self._held:
            return self.required
        wanted = {ident: list(models) for ident, models in self.required.items()}
        for (ident, key), model in self._held.items():
            models = wanted.setdefault(ident, [])
            if all(model_key(name) != key for name in models):
                models.append(model)
        return {ident: tuple(models) for ident, models in wanted.items()}

    def wake(self) -> None:
        """Compare what is required with what the backends have, and start what is missing."""
        if not self.enabled:
            return
        wanted: set[tuple[str, str]] = set()
        for ident, models in self._wanted_models().items():
            target = self._targets.get(ident)
            health = self._monitor.health.get(ident)
            inventory = self._monitor.inventory.get(ident)
            if target is None or not target.ollama or not target.active or inventory is None:
                continue
            # A backend that is down or not read yet keeps its jobs, but nothing starts there.
            wanted.update((ident, model_key(model)) for model in models)
            if health is None or not health.healthy or not inventory.known:
                continue
            missing = set(missing_models(models, inventory.models))
            for model in models:
                job = PullJob(backend=ident, model=model)
                current = self.jobs.get(job.key)
                if model not in missing:
                    if current is not None and current.state != "done" and job.key not in self._tasks:
                        current.state, current.error = "done", ""  # it arrived some other way
                        self._emit(current)
                    continue
                if current is None or (
                    job.key not in self._tasks
                    and worth_restarting(current, health.healthy_since, inventory.refreshed)
                ):
                    self._start(job)
            if self._remove_unrequired:
                # A deletion counts as pending until the model list no longer shows the model.
                self._deleting -= {
                    (b, n) for b, n in self._deleting if b == ident and n not in inventory.models
                }
                for name in unrequired_models(models, inventory.models):
                    self._delete(target, name)
        self._drop(lambda key: key not in wanted)

    def events(self) -> AsyncIterator[PullJob]:
        """Every job change from now on (the caller reads ``jobs`` first for the current state)."""
        queue: asyncio.Queue[PullJob] = asyncio.Queue(maxsize=10_000)
        self._subscribers.add(queue)

        async def stream() -> AsyncIterator[PullJob]:
            try:
                while True:
                    yield await queue.get()
            finally:
                self._subscribers.discard(queue)

        return stream()

    def can_pull(self, ident: str) -> bool:
        """Whether a required model starts being pulled onto ``ident`` now: an active, healthy
        Ollama backend whose model list has been read, with syncing switched on."""
        target = self._targets.get(ident)
        health = self._monitor.health.get(ident)
        inventory = self._monitor.inventory.get(ident)
        return bool(
            self.enabled
            and target is not None
            and target.ollama
            and target.active
            and health is not None
            and health.healthy
            and inventory is not None
            and inventory.known
        )

    def retry_failed(self, idents: Iterable[str], model: str) -> None:
        """Forget failed jobs of ``model`` on ``idents`` (a client asks again): the next ``wake``
        starts them afresh instead of waiting for the backend to recover."""
        for ident in idents:
            key = (ident, model_key(model))
            job = self.jobs.get(key)
            if job is not None and job.state == "failed" and key not in self._tasks:
                del self.jobs[key]

    def _attempt_ended(self, job: PullJob) -> None:
        if self.observer is not None:
            self.observer.pull_attempt_ended(job.backend, job.state, job.completed)

    def progress_of(self, job: PullJob) -> PullProgress:
        """``job`` as published, numbered with its last update."""
        return PullProgress(
            source=self.source,
            seq=self._seqs.get(job.key, 0),
            backend=job.backend,
            model=job.model,
            state=job.state,
            status=job.status,
            layers={d: LayerProgress(completed=c, total=t) for d, (c, t) in job.layers.items()},
            error=job.error,
            attempts=job.attempts,
        )

    @property
    def watchers(self) -> int:
        """How many ``events()`` streams are open."""
        return len(self._subscribers)

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- jobs --------------------------------------------------------------------------------------

    def _emit(self, job: PullJob) -> None:
        job.updated = self._clock.now()
        self._seq += 1
        self._seqs[job.key] = self._seq
        if self.on_progress is not None:
            self.on_progress(self.progress_of(job))
        self._tell_subscribers(job)

    def _tell_subscribers(self, job: PullJob) -> None:
        copy = dataclasses.replace(job, layers=dict(job.layers))
        for queue in self._subscribers:
            with contextlib.suppress(asyncio.QueueFull):  # a stalled reader misses progress, not states
                queue.put_nowait(copy)

    def _start(self, job: PullJob) -> None:
        job.created = self._clock.now()
        self.jobs[job.key] = job
        self._emit(job)
        task = asyncio.create_task(self._run(job), name=f"ollamaflow-pull-{job.backend}-{job.model}")
        self._tasks[job.key] = task
        task.add_done_callback(lambda _t, key=job.key: self._tasks.pop(key, None))

    def _drop(self, doomed: Callable[[tuple[str, str]], bool]) -> None:
        for key in [k for k in self.jobs if doomed(k)]:
            if (task := self._tasks.pop(key, None)) is not None:
                task.cancel()
            job = self.jobs.pop(key)
            if job.state not in ("done", "failed") and self.observer is not None:
                pulled = job.completed if job.state == "pulling" else 0  # else counted when it ended
                self.observer.pull_attempt_ended(job.backend, "cancelled", pulled)
            if job.state not in ("done", "failed"):
                # Whoever follows this pull (a client's /api/pull, /v1.0/pulls/stream, `ollamaflow
                # pull`) must hear that it ends here.
                job.state, job.error = "failed", "pull cancelled: the model is no longer required there"
                job.updated = self._clock.now()
                self._seq += 1
                self._seqs[key] = self._seq
                if self.on_progress is not None:
                    self.on_progress(msgspec.structs.replace(self.progress_of(job), cancelled=True))
                self._tell_subscribers(job)
            self._seqs.pop(key, None)

    async def _run(self, job: PullJob) -> None:
        limit = self._per_backend.setdefault(job.backend, asyncio.Semaphore(self._per_backend_limit))
        while True:
            async with limit, self._overall:
                target = self._targets[job.backend]
                job.attempts += 1
                job.state, job.error, job.next_attempt, job.layers = "pulling", "", None, {}
                self._emit(job)
                try:
                    await self._pull(target, job)
                except PullFailed as exc:
                    job.error = str(exc)
                else:
                    job.state, job.status = "done", "success"
                    self._held.pop(job.key, None)
                    self._attempt_ended(job)
                    self._emit(job)
                    log.info("pulled %s onto backend %s", job.model, job.backend)
                    self._monitor.refresh_inventory(job.backend)
                    return
            log.warning(
                "pull of %s onto %s failed (attempt %d): %s", job.model, job.backend, job.attempts, job.error
            )
            if job.attempts >= self._max_attempts:
                job.state = "failed"
                self._held.pop(job.key, None)
                self._attempt_ended(job)
                self._emit(job)
                return
            delay = min(self._retry_delay * 2 ** (job.attempts - 1), _MAX_BACKOFF)
            job.state, job.next_attempt = "retrying", self._clock.now() + timedelta(seconds=delay)
            self._attempt_ended(job)
            self._emit(job)
            await asyncio.sleep(delay)

    async def _pull(self, target: BackendTarget, job: PullJob) -> None:
        """One attempt: POST /api/pull with a progress stream; raise PullFailed unless it succeeds."""
        body = {"model": job.model, "stream": True}
        try:
            async with self._monitor.client.stream(
                "POST",
                target.url("/api/pull"),
                json=body,
                headers=list(target.headers),
                timeout=_PULL_TIMEOUT,
            ) as response:
                if response.status_code != 200:
                    message = backend_error(await response.aread())
                    raise PullFailed(f"HTTP {response.status_code}: {message}")
                async for text in response.aiter_lines():
                    if not text.strip():
                        continue
                    try:
                        line = msgspec.json.decode(text)
                    except msgspec.DecodeError:
                        raise PullFailed(f"unreadable progress line: {text[:200]!r}") from None
                    if not isinstance(line, dict):
                        continue
                    if line.get("error"):
                        raise PullFailed(str(line["error"]))
                    job.progress(line)
                    self._emit(job)
                    if line.get("status") == "success":
                        return
        except REQUEST_ERRORS as exc:
            raise PullFailed(describe_error(exc)) from None
        raise PullFailed("the progress stream ended before 'success'")

    def _delete(self, target: BackendTarget, name: str) -> None:
        key = (target.id, name)
        if key in self._deleting:
            return
        self._deleting.add(key)

        async def remove() -> None:
            try:
                response = await self._monitor.client.request(
                    "DELETE", target.url("/api/delete"), json={"model": name}, headers=list(target.headers)
                )
                if response.status_code == 200:
                    log.info("deleted unrequired model %s from backend %s", name, target.id)
                    self._monitor.refresh_inventory(target.id)
                    return
                log.warning("cannot delete %s from %s: HTTP %d", name, target.id, response.status_code)
            except REQUEST_ERRORS as exc:
                log.warning("cannot delete %s from %s: %s", name, target.id, describe_error(exc))
            self._deleting.discard(key)  # failed: try again on a later look

        task = asyncio.create_task(remove(), name=f"ollamaflow-delete-{target.id}-{name}")
        self._tasks[("delete", f"{target.id}/{name}")] = task
        task.add_done_callback(lambda _t: self._tasks.pop(("delete", f"{target.id}/{name}"), None))
