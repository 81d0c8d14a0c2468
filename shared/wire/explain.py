"""A routing dry-run: the control plane asks one data plane what it would do with a request.

Carried on the bus subject ``BusNames.explain_subject`` (request/reply, JSON).
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ["ExplainCandidate", "ExplainReply", "ExplainRequest", "decode_reply", "decode_request", "encode"]


class ExplainRequest(msgspec.Struct, frozen=True, kw_only=True):
    host: str = "*"  # the Host header the request would carry (selects the frontend)
    kind: Literal["completions", "embeddings"] = "completions"
    api_format: Literal["Ollama", "OpenAI"] = "Ollama"  # the client's API format
    model: str = ""
    headers: dict[str, str] = {}  # other request headers, e.g. X-OllamaFlow-Label or sticky headers


class ExplainCandidate(msgspec.Struct, frozen=True, kw_only=True):
    backend: str
    eligible: bool  # could take this request now (healthy, allowed, has the model, label matches)
    reason: str = ""  # why not, when not eligible; else what the strategy weighed
    in_flight: int = 0  # this data plane's requests on it now
    limit: int = 0  # this data plane's share of its MaxParallelRequests; 0 when it has none (unlimited)
    loaded: bool = False  # the model is loaded in its memory


class ExplainReply(msgspec.Struct, frozen=True, kw_only=True):
    dataplane: str
    revision: int
    status: int = 200  # what the client would get if no backend can be chosen (404, 503, ...)
    error: str = ""
    frontend: str = ""
    strategy: str = ""
    sticky_key: str = ""
    order: list[str] = []  # backend ids in the order they would be tried; the first is the choice
    candidates: list[ExplainCandidate] = []


_encoder = msgspec.json.Encoder()
_request_decoder = msgspec.json.Decoder(ExplainRequest)
_reply_decoder = msgspec.json.Decoder(ExplainReply)


def encode(value: ExplainRequest | ExplainReply) -> bytes:
    return _encoder.encode(value)


def decode_request(data: bytes) -> ExplainRequest:
    return _request_decoder.decode(data)


def decode_reply(data: bytes) -> ExplainReply:
    return _reply_decoder.decode(data)
