"""Model management asked for by data planes: pull, delete, copy and refresh for one frontend.

A data plane that gets ``/api/pull``, ``/api/delete`` or ``/api/copy`` (or has proxied an
``/api/create``) asks here over ``BusNames.models_subject``; the leading control-plane replica
answers (it alone runs the synchroniser and knows the backends' health and models: see
``controlplane.leader_work``), so there is none to ask while the lease changes hands.
Configuration changes go through ``FrontendService`` (as the admin API's do, so a revision is
published), then the fleet is reconciled at once so that the synchroniser starts (or drops) its pulls
before the answer leaves. Deletes and copies are sent to the frontend's Ollama backends with the
monitor's HTTP client; their model lists are then read again so that routing sees the change.

Every change of a pull job goes out on ``BusNames.pulls_subject`` (``progress`` is the
synchroniser's hook; a queue and one task publish them in order without blocking the synchroniser).

Model management must be allowed on the frontend (``AllowModelManagement``; data planes refuse it
first, this is the second check). A pull adds its model to RequiredModels only where the frontend's
``PullAddsRequiredModels`` is true; elsewhere the synchroniser pulls it onto the frontend's Ollama
backends that lack it without requiring it (``Synchroniser.hold``): the client sees the same
progress, and the configuration stays as the admin wrote it.

A pull that added its model to RequiredModels and then fails for good (every attempt) on every
backend takes the model out again: like a failed Ollama pull it leaves nothing behind, and a
mistyped name does not stay "being pulled" for ever. (Best effort: this replica remembers it.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

import msgspec

from controlplane.admin.schemas import FrontendOut
from controlplane.admin.service import FrontendService
from controlplane.errors import ApiError
from controlplane.fleet import Fleet
from controlplane.health.monitor import REQUEST_ERRORS, Monitor, describe_error
from controlplane.health.targets import BackendTarget
from controlplane.sync.manager import Synchroniser, backend_error
from shared.bus import Bus
from shared.errors import BusError
from shared.models import model_key
from shared.wire.models import ModelReply, ModelRequest, PullProgress, decode_request, encode

__all__ = ["ModelRequests"]

log = logging.getLogger("ollamaflow.controlplane.models")

# Seconds one backend may take to delete or copy a model.
BACKEND_TIMEOUT = 30.0
_QUEUE_LIMIT = 10_000


class ModelRequests:
    """Serves the models subject and publishes pull progress."""

    def __init__(
        self, bus: Bus, frontends: FrontendService, fleet: Fleet, sync: Synchroniser, monitor: Monitor
    ) -> None:
        self._bus = bus
        self._frontends = frontends
        self._fleet = fleet
        self._sync = sync
        self._monitor = monitor
        self._updates: asyncio.Queue[PullProgress] = asyncio.Queue(maxsize=_QUEUE_LIMIT)
        # (frontend id, model key) -> the model as asked and the backends whose pull has not failed
        # for good yet, for pulls that added the model to RequiredModels.
        self._trials: dict[tuple[str, str], tuple[str, set[str]]] = {}
        self._rollbacks: set[asyncio.Task[None]] = set()
        self.serving = False

    def progress(self, update: PullProgress) -> None:
        """The synchroniser's hook: queue ``update`` for publishing (dropped if the bus is far behind)."""
        with contextlib.suppress(asyncio.QueueFull):
            self._updates.put_nowait(update)
        if update.state in ("done", "failed") and not update.cancelled:
            self._settle_trials(update)

    def _settle_trials(self, update: PullProgress) -> None:
        key = model_key(update.model)
        for trial in [t for t in self._trials if t[1] == key]:
            model, waiting = self._trials[trial]
            if update.backend not in waiting:
                continue
            if update.state == "done":  # it is somewhere now: it stays required
                del self._trials[trial]
                continue
            waiting.discard(update.backend)
            if not waiting:
                del self._trials[trial]
                task = asyncio.create_task(self._roll_back(trial[0], model), name="ollamaflow-pull-rollback")
                self._rollbacks.add(task)
                task.add_done_callback(self._rollbacks.discard)

    async def _roll_back(self, frontend_id: str, model: str) -> None:
        try:
            await self._set_required(frontend_id, model, present=False)
            await self._fleet.reconcile()
        except Exception as exc:  # the frontend went away, or the database: nothing else to undo
            log.warning("cannot take %s out of the RequiredModels of %s: %s", model, frontend_id, exc)
            return
        log.info("%s failed on every backend of frontend %s: no longer required", model, frontend_id)

    async def run(self, *, retry_every: float = 0.1) -> None:
        """Serve requests and publish progress until cancelled; waits for the bus as long as it takes."""
        subject = self._bus.names.models_subject
        while True:
            try:
                stop = await self._bus.serve(subject, self.handle, queue="controlplanes")
                break
            except BusError:  # not connected yet (the runtime connects it in another task)
                await asyncio.sleep(retry_every)
        self.serving = True
        log.info("serving model requests on %s", subject)
        try:
            while True:
                update = await self._updates.get()
                try:
                    await self._bus.publish(self._bus.names.pulls_subject, encode(update))
                except BusError as exc:  # progress is best effort: a client may miss a step
                    log.debug("cannot publish pull progress: %s", exc)
        finally:
            await stop()
            for task in list(self._rollbacks):
                task.cancel()

    async def handle(self, data: bytes) -> bytes:
        """One request in, one ``ModelReply`` out, whatever happens."""
        try:
            request = decode_request(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return encode(ModelReply(status=400, error=f"invalid model request: {exc}"))
        try:
            reply = await self._dispatch(request)
        except ApiError as exc:
            reply = ModelReply(status=exc.status, error=exc.description or exc.kind)
        except Exception:  # the database or a backend went away: details for the log, not the client
            log.exception(
                "model request %s for %s failed (request %s)",
                request.action,
                request.frontend_id,
                request.request_id or "-",
            )
            reference = f" (request {request.request_id})" if request.request_id else ""
            reply = ModelReply(status=503, error=f"the control plane cannot do this now{reference}")
        return encode(reply)

    async def _dispatch(self, request: ModelRequest) -> ModelReply:
        frontend = await self._frontends.get(request.frontend_id)
        if request.action == "refresh":
            if request.backend in frontend.backends:
                self._monitor.refresh_inventory(request.backend)
            return ModelReply(backends=[request.backend])
        if not frontend.allow_model_management:
            message = (
                f"model management is not allowed on frontend '{frontend.identifier}' "
                "(its AllowModelManagement is false)"
            )
            return ModelReply(status=403, error=message)
        model = request.model.strip()
        if not model:
            return ModelReply(status=400, error="model is required")
        if request.action == "pull":
            return await self._pull(frontend, model)
        if request.action == "delete":
            return await self._delete(frontend, model)
        destination = request.destination.strip()
        if not destination:
            return ModelReply(status=400, error="destination is required")
        return await self._copy(frontend, model, destination)

    async def admin_pull(self, frontend_id: str, model: str) -> ModelReply:
        """A pull an admin starts (``POST /v1.0/frontends/{id}/pull``): the data plane's pull without
        the AllowModelManagement check (an admin token may manage everything), every other rule kept."""
        frontend = await self._frontends.get(frontend_id)
        return await self._pull(frontend, model.strip())

    # -- the frontend's backends -------------------------------------------------------------------

    def _targets(self, frontend: FrontendOut) -> tuple[list[BackendTarget], list[str]]:
        """The frontend's active Ollama backends, and its OpenAI-format ones (they cannot take part)."""
        ollama, other = [], []
        for ident in dict.fromkeys(frontend.backends):
            target = self._monitor.targets.get(ident)
            if target is None or not target.active:
                continue
            if target.ollama:
                ollama.append(target)
            else:
                other.append(ident)
        return ollama, other

    def _lists(self, ident: str, model: str) -> bool:
        inventory = self._monitor.inventory.get(ident)
        key = model_key(model)
        return inventory is not None and any(model_key(name) == key for name in inventory.models)

    async def _set_required(self, frontend_id: str, model: str, *, present: bool) -> bool:
        """Add ``model`` to (or take it out of) RequiredModels; whether the list had it before."""
        return await self._frontends.edit_required(frontend_id, model, present=present)

    # -- the actions -------------------------------------------------------------------------------

    async def _pull(self, frontend: FrontendOut, model: str) -> ModelReply:
        # The monitor learns of backends on its next pass; a pull right after a backend was added
        # must see it, not answer that nobody can pull.
        await self._fleet.reconcile()
        targets, skipped = self._targets(frontend)
        if not targets:
            serving = [ident for ident in skipped if self._lists(ident, model)]
            if serving:
                return ModelReply(present=serving, skipped=skipped)
            message = f"model '{model}' not found; this frontend's OpenAI-compatible backends cannot pull"
            return ModelReply(status=404, error=message, skipped=skipped)
        idents = [t.id for t in targets]
        adds = frontend.pull_adds_required_models
        if not adds and self._sync.removes_unrequired:
            message = (
                f"pulls on frontend '{frontend.identifier}' do not add to its RequiredModels "
                "(PullAddsRequiredModels is false), and this control plane deletes models nothing "
                "requires (OLLAMAFLOW_SYNC_REMOVE_UNREQUIRED): the model would not stay"
            )
            return ModelReply(status=403, error=message, skipped=skipped)
        # Only a pull that put the model into RequiredModels has something to roll back.
        added = adds and not await self._set_required(frontend.identifier, model, present=True)
        self._sync.retry_failed(idents, model)
        await self._fleet.reconcile()  # the synchroniser learns of it now and starts the pulls
        ready = [ident for ident in idents if self._sync.can_pull(ident)]
        if not ready:
            if not self._sync.enabled:
                why = "this control plane does not sync models (backend monitoring is off)"
            else:
                why = f"no healthy Ollama backend of frontend '{frontend.identifier}' can pull it now"
            later = f"; '{model}' is a required model now and is pulled once one can" if adds else ""
            return ModelReply(status=503, error=why + later, skipped=skipped)
        if not adds:
            self._sync.hold(ready, model)
        key = model_key(model)
        jobs = [self._sync.jobs.get((ident, key)) for ident in ready]
        progress = [self._sync.progress_of(job) for job in jobs if job is not None]
        running = {p.backend for p in progress}
        if added and running == set(ready) and not any(p.state == "done" for p in progress):
            self._trials[(frontend.identifier, key)] = (model, set(ready))
        return ModelReply(
            source=self._sync.source,
            backends=ready,
            present=[ident for ident in ready if ident not in running],
            jobs=progress,
            skipped=skipped,
        )

    async def _delete(self, frontend: FrontendOut, model: str) -> ModelReply:
        targets, skipped = self._targets(frontend)
        was_required = await self._set_required(frontend.identifier, model, present=False)
        self._trials.pop((frontend.identifier, model_key(model)), None)
        self._sync.release([t.id for t in targets], model)
        await self._fleet.reconcile()  # drops its pulls, so none brings the model back
        key = model_key(model)
        # A backend another frontend requires the model on keeps it (it would be pulled back anyway).
        kept = {t.id for t in targets if key in {model_key(n) for n in self._sync.required.get(t.id, ())}}
        doomed = [t for t in targets if t.id not in kept]
        done, failures = await self._on_backends(doomed, "DELETE", "/api/delete", {"model": model})
        if not done and failures:
            return _failed(failures, skipped)
        if not done and not was_required and not kept:
            return ModelReply(status=404, error=f"model '{model}' not found", skipped=skipped)
        return ModelReply(backends=done, skipped=[*skipped, *sorted(kept)])

    async def _copy(self, frontend: FrontendOut, source: str, destination: str) -> ModelReply:
        targets, skipped = self._targets(frontend)
        body = {"source": source, "destination": destination}
        done, failures = await self._on_backends(targets, "POST", "/api/copy", body)
        if not done and failures:
            return _failed(failures, skipped)
        if not done:
            return ModelReply(status=404, error=f'model "{source}" not found', skipped=skipped)
        return ModelReply(backends=done, skipped=skipped)

    async def _on_backends(
        self, targets: Iterable[BackendTarget], method: str, path: str, body: dict[str, str]
    ) -> tuple[list[str], list[tuple[int, str]]]:
        """Send one request to each backend at once: the ids that did it, and the failures as
        (status, message); a 404 (it does not have the model) is neither."""

        async def one(target: BackendTarget) -> tuple[str, int, str]:
            try:
                response = await self._monitor.client.request(
                    method,
                    target.url(path),
                    json=body,
                    headers=list(target.headers),
                    timeout=BACKEND_TIMEOUT,
                )
            except REQUEST_ERRORS as exc:
                return target.id, 502, f"backend {target.id}: {describe_error(exc)}"
            if response.status_code == 200:
                return target.id, 200, ""
            message = backend_error(response.content) or f"HTTP {response.status_code}"
            status = response.status_code if response.status_code < 500 else 502
            return target.id, status, f"backend {target.id}: {message}"

        results = await asyncio.gather(*(one(t) for t in targets))
        done = [ident for ident, status, _ in results if status == 200]
        for ident in done:  # read its models now, so the next snapshot routes by them
            self._monitor.refresh_inventory(ident)
        failures = [(status, message) for _, status, message in results if status not in (200, 404)]
        for _, message in failures:
            log.warning("%s %s: %s", method, path, message)
        return done, failures


def _failed(failures: list[tuple[int, str]], skipped: list[str]) -> ModelReply:
    status, message = failures[0]
    return ModelReply(status=status, error=message, skipped=skipped)
