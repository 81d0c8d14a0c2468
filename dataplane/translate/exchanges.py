"""Which translation a proxied request needs, as one object per client endpoint and backend format.

The route asks ``Translations.for_request`` once it knows the client's format (by path) and the
backend's. ``None`` means no translation: same format on both sides, the body passes through
untouched. Otherwise the ``Exchange`` rewrites the request, the whole reply or the stream, and
error bodies. Listing, show, ps, pull and version are answered by the route (see ``models``), not here.

How a route uses one (``Untranslatable`` at any step renders with ``exchange.untranslatable``)::

    call = exchange.request(body, now_ns=now, backend_model=alias)   # or a LocalReply: answer it
    # send call.body to call.path; a non-2xx answer goes back as exchange.error(status, body)
    if not call.stream:
        reply = exchange.reply(call, answer, started_ns=start, now_ns=now)
    else:
        stream = exchange.stream(call, started_ns=start)   # exchange.stream_content_type
        for chunk in upstream: send(stream.feed(chunk, now))
        send(stream.close(now))   # also on a broken upstream: it writes the error, never a done
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import ClassVar, Protocol

from dataplane.translate import embeddings, ollama_on_openai, openai_on_ollama
from dataplane.translate.common import BackendCall, IdSource, LocalReply
from dataplane.translate.errors import (
    Untranslatable,
    ollama_error_from_openai,
    openai_error_from_ollama,
    unsupported_operation,
)
from shared.snapshot import ApiFormat

__all__ = ["NDJSON", "SSE", "VLLM", "Exchange", "StreamTranslator", "Translations"]

NDJSON = "application/x-ndjson"
SSE = "text/event-stream"

VLLM = "vllm"  # BackendView.dialect of a vLLM backend

# Ollama operations an OpenAI-compatible backend has no counterpart for (see docs/conformance.md).
_OLLAMA_ONLY = ("/api/push", "/api/create", "/api/copy", "/api/delete", "/api/blobs/")


class StreamTranslator(Protocol):
    """Backend stream bytes in, client stream bytes out; ``close`` when the backend body ends."""

    @property
    def ended(self) -> bool: ...

    def feed(self, chunk: bytes, now_ns: int) -> list[bytes]: ...

    def close(self, now_ns: int) -> list[bytes]: ...


class Exchange(abc.ABC):
    """One client endpoint against a backend of the other format; subclasses fill in the steps."""

    client_format: ClassVar[ApiFormat] = "Ollama"

    @abc.abstractmethod
    def request(self, body: bytes, *, now_ns: int, backend_model: str | None) -> BackendCall | LocalReply:
        """The client's body for the backend, or an answer given without one (``LocalReply``)."""

    @abc.abstractmethod
    def reply(self, call: BackendCall, body: bytes, *, started_ns: int, now_ns: int) -> bytes:
        """A whole 2xx reply, rewritten."""

    def stream(self, call: BackendCall, *, started_ns: int) -> StreamTranslator:
        """The stream translator; only called when ``call.stream`` is true."""
        raise Untranslatable("this endpoint does not stream", 501)

    @property
    def stream_content_type(self) -> str:
        return NDJSON if self.client_format == "Ollama" else SSE

    def error(self, status: int, body: bytes) -> tuple[int, bytes]:
        """A backend's error reply (before any byte went to the client) in the client's format."""
        if self.client_format == "Ollama":
            return ollama_error_from_openai(status, body)
        return openai_error_from_ollama(status, body)

    def untranslatable(self, error: Untranslatable) -> bytes:
        return error.ollama_body() if self.client_format == "Ollama" else error.openai_body()


@dataclass(frozen=True)
class _OllamaChatOnOpenAI(Exchange):
    """/api/chat (``chat``) or /api/generate for an OpenAI-compatible backend."""

    chat: bool
    ids: IdSource
    extras: bool

    def request(self, body: bytes, *, now_ns: int, backend_model: str | None) -> BackendCall | LocalReply:
        translate = ollama_on_openai.chat_request if self.chat else ollama_on_openai.generate_request
        return translate(body, now_ns=now_ns, backend_model=backend_model, extras=self.extras)

    def reply(self, call: BackendCall, body: bytes, *, started_ns: int, now_ns: int) -> bytes:
        return ollama_on_openai.ollama_reply(
            body, model=call.model, chat=self.chat, started_ns=started_ns, now_ns=now_ns, ids=self.ids
        )

    def stream(self, call: BackendCall, *, started_ns: int) -> StreamTranslator:
        return ollama_on_openai.OllamaStream(
            model=call.model, chat=self.chat, started_ns=started_ns, ids=self.ids
        )


@dataclass(frozen=True)
class _OllamaEmbedOnOpenAI(Exchange):
    """/api/embed, or the legacy /api/embeddings (``legacy``), for an OpenAI-compatible backend."""

    legacy: bool

    def request(self, body: bytes, *, now_ns: int, backend_model: str | None) -> BackendCall | LocalReply:
        translate = ollama_on_openai.embeddings_request if self.legacy else ollama_on_openai.embed_request
        return translate(body, backend_model=backend_model)

    def reply(self, call: BackendCall, body: bytes, *, started_ns: int, now_ns: int) -> bytes:
        if self.legacy:
            return embeddings.ollama_embeddings_reply(body)
        return embeddings.ollama_embed_reply(body, model=call.model, started_ns=started_ns, now_ns=now_ns)


@dataclass(frozen=True)
class _OpenAIChatOnOllama(Exchange):
    """/v1/chat/completions (``chat``) or /v1/completions for an Ollama backend."""

    chat: bool
    ids: IdSource
    client_format: ClassVar[ApiFormat] = "OpenAI"

    @property
    def _prefix(self) -> str:
        return "chatcmpl-" if self.chat else "cmpl-"

    def request(self, body: bytes, *, now_ns: int, backend_model: str | None) -> BackendCall | LocalReply:
        translate = openai_on_ollama.chat_request if self.chat else openai_on_ollama.completion_request
        return translate(body, backend_model=backend_model)

    def reply(self, call: BackendCall, body: bytes, *, started_ns: int, now_ns: int) -> bytes:
        return openai_on_ollama.openai_reply(
            body,
            model=call.model,
            chat=self.chat,
            id=self.ids(self._prefix),
            created=now_ns // 1_000_000_000,
            ids=self.ids,
        )

    def stream(self, call: BackendCall, *, started_ns: int) -> StreamTranslator:
        return openai_on_ollama.OpenAIStream(
            model=call.model,
            chat=self.chat,
            id=self.ids(self._prefix),
            created=started_ns // 1_000_000_000,
            include_usage=call.include_usage,
            ids=self.ids,
        )


@dataclass(frozen=True)
class _OpenAIEmbedOnOllama(Exchange):
    """/v1/embeddings for an Ollama backend."""

    client_format: ClassVar[ApiFormat] = "OpenAI"

    def request(self, body: bytes, *, now_ns: int, backend_model: str | None) -> BackendCall | LocalReply:
        return openai_on_ollama.embeddings_request(body, backend_model=backend_model)

    def reply(self, call: BackendCall, body: bytes, *, started_ns: int, now_ns: int) -> bytes:
        return embeddings.openai_embeddings_reply(body, model=call.model, as_base64=call.base64)


class Translations:
    """Built once at start-up with the id source; hands out the ``Exchange`` for each request.

    Both variants of the Ollama-to-OpenAI exchanges exist from the start, so choosing the one for a
    backend's dialect ("vllm" adds top_k, min_p, repetition_penalty, ...) is one dict lookup.
    """

    def __init__(self, ids: IdSource) -> None:
        self._plain = self._table(ids, extras=False)
        self._dialects: dict[str, dict[tuple[ApiFormat, str], Exchange]] = {
            "": self._plain,
            VLLM: self._table(ids, extras=True),
        }

    @staticmethod
    def _table(ids: IdSource, *, extras: bool) -> dict[tuple[ApiFormat, str], Exchange]:
        return {
            ("Ollama", "/api/chat"): _OllamaChatOnOpenAI(chat=True, ids=ids, extras=extras),
            ("Ollama", "/api/generate"): _OllamaChatOnOpenAI(chat=False, ids=ids, extras=extras),
            ("Ollama", "/api/embed"): _OllamaEmbedOnOpenAI(legacy=False),
            ("Ollama", "/api/embeddings"): _OllamaEmbedOnOpenAI(legacy=True),
            ("OpenAI", "/v1/chat/completions"): _OpenAIChatOnOllama(chat=True, ids=ids),
            ("OpenAI", "/v1/completions"): _OpenAIChatOnOllama(chat=False, ids=ids),
            ("OpenAI", "/v1/embeddings"): _OpenAIEmbedOnOllama(),
        }

    def for_request(
        self,
        path: str,
        client_format: ApiFormat,
        backend_format: ApiFormat,
        *,
        backend: str,
        dialect: str = "",
    ) -> Exchange | None:
        """The exchange for ``path``; ``None`` if no translation is needed. ``dialect`` is the
        backend's (``BackendView.dialect``); an unknown one gets the plain OpenAI translation.

        Raises ``Untranslatable`` (501) for Ollama operations an OpenAI backend cannot do.
        """
        if client_format == backend_format:
            return None
        exchange = self._dialects.get(dialect, self._plain).get((client_format, path))
        if exchange is not None:
            return exchange
        if client_format == "Ollama" and path.startswith(_OLLAMA_ONLY):
            raise unsupported_operation(path, backend)
        if client_format == "Ollama":
            raise Untranslatable(f"{path} cannot be translated for OpenAI-compatible backend {backend}", 501)
        # Ollama serves the rest of the OpenAI API itself (/v1/responses, /v1/models/...).
        return None
