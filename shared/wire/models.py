"""Model management between the planes: a data plane asks the control plane to act for a frontend.

``ModelRequest``/``ModelReply`` travel on ``BusNames.models_subject`` (request/reply, JSON, answered by
one control plane of the queue group). ``PullProgress`` is published on ``BusNames.pulls_subject``
for every change of a pull job of the synchroniser, whoever asked for the pull.

Actions:
- ``pull``: add ``model`` to the frontend's RequiredModels (the sync starts at once). The reply names
  the Ollama backends that must end up with it (``backends``), those already having it
  (``present``) and the current state of their jobs (``jobs``); progress follows on pulls_subject.
- ``delete``: remove ``model`` from RequiredModels and delete it on the frontend's Ollama backends.
- ``copy``: copy ``model`` to ``destination`` on the frontend's Ollama backends that have it.
- ``refresh``: read ``backend``'s model list again now (e.g. after a create proxied to it).
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = [
    "LayerProgress",
    "ModelAction",
    "ModelReply",
    "ModelRequest",
    "PullJobState",
    "PullProgress",
    "decode_progress",
    "decode_reply",
    "decode_request",
    "encode",
]

ModelAction = Literal["pull", "delete", "copy", "refresh"]
PullJobState = Literal["queued", "pulling", "retrying", "done", "failed"]


class ModelRequest(msgspec.Struct, frozen=True, kw_only=True):
    action: ModelAction
    frontend_id: str
    model: str = ""
    destination: str = ""  # copy only
    backend: str = ""  # refresh only
    # The client request's X-OllamaFlow-Request id: failures are logged under it, and the client's
    # generic error names it.
    request_id: str = ""


class LayerProgress(msgspec.Struct, frozen=True, kw_only=True):
    completed: int = 0
    total: int = 0


class PullProgress(msgspec.Struct, frozen=True, kw_only=True):
    """One pull job (one model onto one backend) as it is now."""

    source: str  # the synchroniser that runs the job (one per control-plane replica)
    seq: int  # increases with every update from that source: later updates win
    backend: str
    model: str
    state: PullJobState
    status: str = ""  # the backend's last progress status line
    layers: dict[str, LayerProgress] = {}  # digest -> bytes done and total
    error: str = ""
    attempts: int = 0
    cancelled: bool = False  # ended because the model is no longer required there, not by failing

    @property
    def done(self) -> bool:
        return self.state == "done"


class ModelReply(msgspec.Struct, frozen=True, kw_only=True):
    status: int = 200  # the HTTP status the client should see
    error: str = ""
    source: str = ""  # pull: whose PullProgress to follow
    backends: list[str] = []  # pull: must end up with the model; delete/copy: where it was done
    present: list[str] = []  # pull: already have it
    jobs: list[PullProgress] = []  # pull: the current state of the jobs on ``backends``
    skipped: list[str] = []  # OpenAI-format backends: they cannot pull, delete or copy


_encoder = msgspec.json.Encoder()
_request_decoder = msgspec.json.Decoder(ModelRequest)
_reply_decoder = msgspec.json.Decoder(ModelReply)
_progress_decoder = msgspec.json.Decoder(PullProgress)


def encode(value: ModelRequest | ModelReply | PullProgress) -> bytes:
    return _encoder.encode(value)


def decode_request(data: bytes) -> ModelRequest:
    return _request_decoder.decode(data)


def decode_reply(data: bytes) -> ModelReply:
    return _reply_decoder.decode(data)


def decode_progress(data: bytes) -> PullProgress:
    return _progress_decoder.decode(data)
