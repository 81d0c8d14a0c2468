"""PURE: one client's /api/pull progress, aggregated over the frontend's Ollama backends.

The control plane's answer names the backends that must end up with the model, those that already
have it, and the current state of their pull jobs; ``PullProgress`` updates follow from the bus. This
turns them into Ollama's own progress lines: ``pulling manifest``, then one ``pulling <digest>`` line
per change of a layer (the layer's size as total, and as done the average over the backends that
must get the model, so one progress bar runs once from 0 to 100 %), then
``verifying sha256 digest``, ``writing manifest`` and ``success`` once every backend has the model,
or one ``{"error": ...}`` line as soon as a backend fails (the control plane's sync retries on its
own, but the client's pull, like Ollama's, has failed).

Updates from another synchroniser (another control-plane replica), for other backends or other
models, or older than what was already seen are ignored, so they may arrive in any order.
"""

from __future__ import annotations

from typing import Any

from shared.models import model_key
from shared.wire.models import ModelReply, PullProgress

__all__ = ["FINAL_STEPS", "PullStream"]

Line = dict[str, Any]

FINAL_STEPS: tuple[Line, ...] = (
    {"status": "verifying sha256 digest"},
    {"status": "writing manifest"},
    {"status": "success"},
)


class PullStream:
    """Progress lines for one pull; feed it the reply, then updates, until ``finished``."""

    def __init__(self, model: str) -> None:
        self.model = model
        self._key = model_key(model)
        self._source = ""
        self._backends: tuple[str, ...] = ()
        self._waiting: set[str] = set()
        self._done: set[str] = set()
        self._seen: dict[str, int] = {}  # backend -> the seq of the last update taken
        self._layers: dict[str, dict[str, tuple[int, int]]] = {}  # backend -> digest -> (done, total)
        self._shown: dict[str, tuple[int, int]] = {}  # digest -> the sums last sent
        self.finished = False
        self.last: Line = {}  # the last line produced (what a non-streamed pull answers)

    def begin(self, reply: ModelReply) -> list[Line]:
        """The lines for the control plane's (successful) answer."""
        self._source = reply.source
        self._backends = tuple(reply.backends)
        self._waiting = set(reply.backends) - set(reply.present)
        lines: list[Line] = [{"status": "pulling manifest"}]
        layers: dict[str, Line] = {}  # the jobs' state at once: one line per layer, the latest
        for job in reply.jobs:
            for line in self._take(job):
                if "digest" in line:
                    layers[line["digest"]] = line
                else:
                    lines.append(line)
        lines[1:1] = layers.values()
        if not self.finished:
            lines += self._maybe_finish()
        return self._emit(lines)

    def update(self, progress: PullProgress) -> list[Line]:
        """The lines one update adds (often none)."""
        if self.finished:
            return []
        lines = self._take(progress)
        if not self.finished:
            lines += self._maybe_finish()
        return self._emit(lines)

    def fail(self, message: str) -> list[Line]:
        """End with an error that did not come from a backend (e.g. no news for too long)."""
        if self.finished:
            return []
        self.finished = True
        return self._emit([{"error": message}])

    @property
    def pending(self) -> frozenset[str]:
        """The backends the pull still waits for."""
        return frozenset(self._waiting - self._done)

    @property
    def settled(self) -> tuple[str, ...]:
        """The backends that have the model once the pull succeeded (none while it runs or failed)."""
        if not self.finished or "error" in self.last:
            return ()
        return self._backends

    def _emit(self, lines: list[Line]) -> list[Line]:
        if lines:
            self.last = lines[-1]
        return lines

    def _take(self, progress: PullProgress) -> list[Line]:
        backend = progress.backend
        if (
            progress.source != self._source
            or backend not in self._waiting
            or backend in self._done
            or model_key(progress.model) != self._key
            or progress.seq <= self._seen.get(backend, -1)
        ):
            return []
        self._seen[backend] = progress.seq
        if progress.state in ("failed", "retrying") or progress.error:
            self.finished = True
            reason = progress.error or "the pull failed"
            return [{"error": f"pulling {self.model} onto backend {backend} failed: {reason}"}]
        if progress.state == "done":
            self._done.add(backend)
        before = self._layers.get(backend, {})
        now = {digest: (layer.completed, layer.total) for digest, layer in progress.layers.items()}
        self._layers[backend] = now
        changed = [digest for digest in now if before.get(digest) != now[digest]]
        if progress.state == "done":  # it now counts whole for every layer, reported or not
            changed += [d for layers in self._layers.values() for d in layers if d not in changed]
            changed = list(dict.fromkeys(changed))
        return [line for digest in changed if (line := self._layer_line(digest)) is not None]

    def _layer_line(self, digest: str) -> Line | None:
        # Like one Ollama pull: the layer's own size as the total, and as done the average over the
        # backends that must get the model (one that finished counts whole), so the bar neither
        # jumps back when another backend starts nor reaches the end before the last one does.
        total = max((layers[digest][1] for layers in self._layers.values() if digest in layers), default=0)
        waiting = self._waiting
        done_sum = 0
        for backend in waiting:
            if backend in self._done:
                done_sum += total
            else:
                done_sum += self._layers.get(backend, {}).get(digest, (0, 0))[0]
        done = min(done_sum // len(waiting), total) if waiting else total  # none left: all have it
        if self._shown.get(digest) == (done, total):
            return None
        self._shown[digest] = (done, total)
        line: Line = {"status": f"pulling {digest.removeprefix('sha256:')[:12]}", "digest": digest}
        if total:  # Ollama leaves zero counts out
            line["total"] = total
        if done:
            line["completed"] = done
        return line

    def _maybe_finish(self) -> list[Line]:
        if self._waiting - self._done:
            return []
        self.finished = True
        return [dict(step) for step in FINAL_STEPS]
