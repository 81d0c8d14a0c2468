"""The bus between the planes: one NATS connection and the operations the planes need of it.

- Snapshots: JetStream KV bucket ``<namespace>`` (file storage, direct gets), key ``snapshot.v<major>``;
  the control plane writes with compare-and-set on the KV sequence so that racing replicas never go
  backwards. A snapshot larger than one NATS message (the server's ``max_payload`` less some headroom)
  travels in pieces under ``snapshot.v<major>.<revision>.<index>``, written first; the snapshot key
  then holds a small manifest (``shared.pieces``), written last with the same compare-and-set. Readers
  fetch the pieces in parallel and check them against the manifest. After each write the pieces of all
  but the new revision and the one before it (a reader may still be fetching that) are purged.
- Reports: core NATS subject ``<namespace>.reports.dataplane``, fire-and-forget, about once a second.
- Requests between the planes (core NATS request/reply, answered by one member of a queue group):
  ``<namespace>.dataplane.explain`` (the control plane asks a data plane to dry-run a routing
  decision) and ``<namespace>.controlplane.models`` (a data plane asks the control plane to pull,
  delete or copy a model for a frontend). Pull progress is published on ``<namespace>.pulls.progress``.
- Control-plane replicas: the lease naming the one that probes, syncs and publishes is the key
  ``lease.controlplane`` of the same KV bucket (compare-and-set on its revision, like the snapshot);
  a replica that committed an admin change says so on ``<namespace>.controlplane.changed`` so that
  the leader publishes it at once.

A ``namespace`` other than the default keeps test runs and side-by-side clusters apart on one server.

Who may use which name is in ``shared.bus_permissions`` (a name added here needs its role there);
how a plane logs in (user, TLS, its role's reply inbox ``_INBOX.<namespace>.<role>``) is
``shared.bus_connect``. Only writers create the bucket: readers wait for the first snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from shared.bus_connect import BusLogin, connect_options
from shared.bus_names import DEFAULT_NAMESPACE, BusNames
from shared.errors import (
    BusAuthError,
    BusError,
    BusNoResponder,
    LeaseConflict,
    SnapshotConflict,
    SnapshotRejected,
)
from shared.pieces import decode_manifest, is_manifest, names_held
from shared.pieces_kv import fetch_pieces, purge_pieces, store_pieces
from shared.snapshot import SCHEMA_MAJOR

__all__ = ["DEFAULT_NAMESPACE", "Bus", "BusNames"]

log = logging.getLogger("ollamaflow.bus")

# What a snapshot piece leaves of max_payload for the KV message's own headers.
PIECE_HEADROOM = 16 * 1024
MIN_PIECE_SIZE = 1024
# JetStream's error codes for a compare-and-set that lost (nats-py maps them for updates, not deletes).
_WRONG_LAST_SEQUENCE = (10071, 10164)


class Bus:
    """One NATS connection and the few operations the planes need from it."""

    def __init__(
        self,
        url: str,
        names: BusNames | None = None,
        *,
        client_name: str = "ollamaflow",
        piece_size: int | None = None,
        login: BusLogin | None = None,
    ) -> None:
        self.url = url
        self.names = names or BusNames()
        self._client_name = client_name
        # Built here so that an unreadable CA or client certificate is a ConfigError at start-up.
        self._login_options = connect_options(url, login or BusLogin())
        self._nc: Client | None = None
        self._kv: KeyValue | None = None
        self._piece_size = piece_size
        self._direct_tried = False
        # Pieces may be stored that a write should purge (so far as this writer knows).
        self._pieces_seen = True
        self._said: dict[str, float] = {}  # bus errors logged recently, by text (rate limit)

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    @property
    def reconnects(self) -> int:
        """How often this connection was re-established (a quick server restart can pass unseen by
        ``connected``, and leave subscriptions to JetStream consumers that no longer exist)."""
        return int(self._nc.stats["reconnects"]) if self._nc is not None else 0

    async def connect(self, *, connect_timeout: float = 2.0) -> None:
        """Connect once; raise BusError if the server does not answer. Reconnects forever afterwards."""
        try:
            nc = await nats.connect(
                self.url,
                name=self._client_name,
                connect_timeout=connect_timeout,
                # Off for the first connection: with it on, nats-py retries refused credentials
                # forever inside connect() and nobody hears why. Switched on once connected.
                allow_reconnect=False,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                ping_interval=5,
                max_outstanding_pings=2,
                error_cb=self._on_error,
                **self._login_options,
            )
        except (OSError, nats.errors.Error, TimeoutError) as exc:
            if _cancel_requested():
                raise asyncio.CancelledError from exc
            if _is_auth_error(exc):
                raise BusAuthError(
                    f"NATS at {self.url} refused this plane's credentials ({exc}): check "
                    "OLLAMAFLOW_NATS_USER and OLLAMAFLOW_NATS_PASSWORD"
                ) from exc
            raise BusError(f"cannot connect to NATS at {self.url}: {exc}") from exc
        if _cancel_requested():
            with contextlib.suppress(Exception):
                await nc.close()
            raise asyncio.CancelledError
        nc.options["allow_reconnect"] = True  # read live by nats-py's reconnect logic
        self._nc = nc

    async def connect_forever(self, *, retry_every: float = 1.0, log_every: float = 5.0) -> None:
        """Keep trying to connect until it works: a plane starts even while NATS is down. Says so at
        most once every ``log_every`` seconds."""
        logged_at: float | None = None
        while True:
            try:
                await self.connect()
                return
            except BusError as exc:
                now = time.monotonic()
                if logged_at is None or now - logged_at >= log_every:
                    level = logging.ERROR if isinstance(exc, BusAuthError) else logging.WARNING
                    log.log(level, "%s; retrying every %gs", exc, retry_every)
                    logged_at = now
                await asyncio.sleep(retry_every)

    async def close(self) -> None:
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
        self._nc = None
        self._kv = None

    async def _on_error(self, exc: Exception) -> None:
        """nats-py reports denials only here (the denied call itself just times out): say them."""
        text = str(exc)
        lowered = text.lower()
        if "permissions violation" in lowered:
            self._say(logging.ERROR, f"NATS denied this plane ({self._client_name}): {text}")
        elif _is_auth_error(exc):
            self._say(logging.ERROR, f"NATS at {self.url} refused this plane's credentials: {text}")
        else:
            log.debug("nats: %s", text)

    def _say(self, level: int, text: str, *, every: float = 30.0) -> None:
        now = time.monotonic()
        if now - self._said.get(text, -every) < every:
            return
        if len(self._said) >= 64:  # bounded: forget the oldest
            self._said.pop(next(iter(self._said)))
        self._said[text] = now
        log.log(level, "%s", text)

    def _client(self) -> Client:
        if self._nc is None or not self._nc.is_connected:
            raise BusError(f"not connected to NATS at {self.url}")
        return self._nc

    def piece_size(self) -> int:
        """The largest snapshot stored as one value; larger ones go in pieces of this size."""
        if self._piece_size is not None:
            return self._piece_size
        return max(MIN_PIECE_SIZE, self._client().max_payload - PIECE_HEADROOM)

    async def _bucket(self, *, writer: bool = False) -> KeyValue:
        """The KV bucket; made if missing only for a writer (data planes may not create it)."""
        if self._kv is None:
            js = self._client().jetstream(timeout=2.0)
            try:
                self._kv = await js.key_value(self.names.bucket)
            except nats.js.errors.BucketNotFoundError:
                if not writer:
                    raise
                config = KeyValueConfig(
                    bucket=self.names.bucket, history=5, storage=StorageType.FILE, direct=True
                )
                try:
                    self._kv = await js.create_key_value(config)
                except nats.js.errors.BadRequestError:
                    # A racing writer made it first (its stream now holds these subjects): open it.
                    self._kv = await js.key_value(self.names.bucket)
        if writer and not self._kv._direct and not self._direct_tried:
            self._direct_tried = True
            try:
                self._kv = await self._allow_direct(self._client().jetstream(timeout=2.0))
            except nats.errors.Error as exc:  # e.g. not permitted: readers take the slower way
                log.warning("cannot switch on direct gets for bucket %s: %s", self.names.bucket, exc)
        return self._kv

    async def _allow_direct(self, js: nats.js.JetStreamContext) -> KeyValue:
        """Switch on direct gets for a bucket made before they were used: a reader then fetches a
        value in one request, without the JetStream API's base64 round trip (several times faster
        for large pieces). Readers that opened the bucket earlier keep working the slower way."""
        info = await js.stream_info(self.names.bucket_stream)
        await js.update_stream(info.config.evolve(allow_direct=True))
        return await js.key_value(self.names.bucket)

    async def read_snapshot_head(self) -> tuple[bytes, int] | None:
        """What the snapshot key holds (the snapshot, or the manifest of its pieces) and its KV
        sequence, or None if there is none."""
        try:
            kv = await self._bucket()
            entry = await kv.get(self.names.snapshot_key)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.BucketNotFoundError):
            return None
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            self._kv = None
            raise BusError(f"cannot read the snapshot: {exc}") from exc
        head = entry.value or b""
        self._pieces_seen = self._pieces_seen or is_manifest(head)
        return (head, entry.revision or 0)

    async def expand_snapshot(self, head: bytes) -> bytes:
        """The snapshot bytes ``head`` stands for: itself, or its pieces joined and checked.

        Raises SnapshotRejected for a bad manifest or pieces that do not match it (or are gone: a
        newer snapshot replaced them), BusError when NATS fails.
        """
        if not is_manifest(head):
            return head
        manifest = decode_manifest(head)
        try:
            return await fetch_pieces(await self._bucket(), self.names, manifest)
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            self._kv = None
            raise BusError(f"cannot read the snapshot pieces: {exc}") from exc

    async def read_snapshot(self) -> tuple[bytes, int] | None:
        """The stored snapshot bytes (joined from pieces if need be) and the KV sequence of the
        snapshot key, or None if there is none. SnapshotRejected as for ``expand_snapshot``."""
        stored = await self.read_snapshot_head()
        if stored is None:
            return None
        return await self.expand_snapshot(stored[0]), stored[1]

    async def write_snapshot(
        self, data: bytes, *, last: int | None, revision: int = 0, content_hash: str = "", replaces: int = 0
    ) -> int:
        """Store a snapshot if the KV sequence is still ``last`` (None: the key must not exist).

        ``revision`` and ``content_hash`` are the snapshot's own: a snapshot too large for one
        message is stored as pieces of that revision, named by a manifest that repeats both.
        ``replaces``: the revision stored at ``last``, whose pieces (if any) are kept for readers that
        may still fetch them; older pieces are purged.
        """
        try:
            kv = await self._bucket(writer=True)
            size = self.piece_size()
            head = data
            if len(data) > size:
                self._pieces_seen = True
                head = await store_pieces(
                    kv,
                    self.names,
                    data,
                    size,
                    schema=SCHEMA_MAJOR,
                    revision=revision,
                    content_hash=content_hash,
                )
            try:
                if last is None:
                    sequence = await kv.create(self.names.snapshot_key, head)
                else:
                    sequence = await kv.update(self.names.snapshot_key, head, last=last)
            except nats.js.errors.KeyWrongLastSequenceError as exc:
                if head is not data:
                    await self._purge_pieces(lambda r: r == revision)
                raise SnapshotConflict("another writer stored a snapshot first") from exc
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            self._kv = None
            raise BusError(f"cannot store the snapshot: {exc}") from exc
        if self._pieces_seen:
            await self._purge_pieces(lambda r: r < revision and r != replaces)
        return sequence

    async def _purge_pieces(self, doomed: Callable[[int], bool]) -> None:
        """Purge the pieces of every ``doomed`` revision (newer ones may be a racing writer's). Best
        effort: a failure leaves them for the next write."""
        try:
            # Once no pieces are left, inline writes need not look again.
            self._pieces_seen = await purge_pieces(self._client().jetstream(timeout=2.0), self.names, doomed)
        except (nats.errors.Error, OSError, TimeoutError, BusError) as exc:
            log.debug("old snapshot pieces not purged yet: %s", exc)

    async def watch_snapshot(
        self, *, bucket_poll: float = 1.0, held: Callable[[int, str], bool] | None = None
    ) -> AsyncIterator[bytes]:
        """Yield the current snapshot bytes, then each new one; raise BusError when the watch breaks.

        Before any snapshot was ever stored the bucket does not exist, and only writers may create it:
        the watch waits for it, checking every ``bucket_poll`` seconds. A snapshot whose pieces cannot
        be fetched or do not match is skipped (logged): a newer one replaced it, or the periodic
        re-read meets it again and reports it. ``held(revision, content_hash)``: true for a snapshot
        the caller needs not (it holds it already, from a delta); one stored in pieces is then not
        fetched at all.
        """
        try:
            while True:
                try:
                    kv = await self._bucket()
                    break
                except nats.js.errors.BucketNotFoundError:
                    await asyncio.sleep(bucket_poll)
            watcher = await kv.watch(self.names.snapshot_key)
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            self._kv = None
            raise BusError(f"cannot watch the snapshot: {exc}") from exc
        try:
            # Not watcher.updates(timeout): on Python 3.11 its asyncio.wait_for loses a cancellation
            # that lands as an entry arrives (e.g. the end-of-history marker right after the current
            # value), and the task cancelled to stop this watch then waits on forever.
            async for entry in watcher:
                if entry is not None and entry.value and entry.operation is None:
                    try:
                        if held is not None and names_held(entry.value, held):
                            continue
                        data = await self.expand_snapshot(entry.value)
                    except SnapshotRejected as exc:
                        log.info("skipped a snapshot from the watch: %s", exc.message)
                        continue
                    yield data
            raise BusError("snapshot watch ended: the watcher stopped")
        except (nats.errors.Error, OSError) as exc:
            raise BusError(f"snapshot watch ended: {exc}") from exc
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()

    async def read_lease(self) -> tuple[bytes, int] | None:
        """The control-plane lease and its KV revision, or None if nobody holds it (never taken, or
        released)."""
        try:
            kv = await self._bucket()
            entry = await kv.get(self.names.lease_key)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.BucketNotFoundError):  # also released
            return None
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            self._kv = None
            raise BusError(f"cannot read the control-plane lease: {exc}") from exc
        return (entry.value or b"", entry.revision or 0)

    async def write_lease(self, data: bytes, *, last: int | None) -> int:
        """Store the lease if its revision is still ``last`` (None: nobody may hold it); its new
        revision. Raises LeaseConflict when another replica wrote it first."""
        try:
            kv = await self._bucket(writer=True)  # the first lease may come before any snapshot
            if last is None:
                return await kv.create(self.names.lease_key, data)  # also over a released lease
            return await kv.update(self.names.lease_key, data, last=last)
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise LeaseConflict("another control plane wrote the lease first") from exc
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            self._kv = None
            raise BusError(f"cannot write the control-plane lease: {exc}") from exc

    async def release_lease(self, *, last: int) -> None:
        """Delete the lease if its revision is still ``last`` (so that nobody else's is deleted)."""
        try:
            kv = await self._bucket(writer=True)
            await kv.delete(self.names.lease_key, last=last)
        except nats.js.errors.APIError as exc:
            if exc.err_code not in _WRONG_LAST_SEQUENCE:
                self._kv = None
                raise BusError(f"cannot release the control-plane lease: {exc}") from exc
            raise LeaseConflict("the lease changed hands before it was released") from exc
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            self._kv = None
            raise BusError(f"cannot release the control-plane lease: {exc}") from exc

    async def publish_report(self, data: bytes) -> None:
        try:
            await self._client().publish(self.names.reports_subject, data)
        except (nats.errors.Error, OSError) as exc:
            raise BusError(f"cannot publish a report: {exc}") from exc

    async def subscribe_reports(self, handler: Callable[[bytes], Awaitable[None]]) -> None:
        async def on_message(msg: nats.aio.msg.Msg) -> None:
            await handler(msg.data)

        try:
            client = self._client()
            await client.subscribe(self.names.reports_subject, cb=on_message)
            await _server_has_seen(client)
        except (nats.errors.Error, OSError) as exc:
            raise BusError(f"cannot subscribe to reports: {exc}") from exc

    async def publish(self, subject: str, data: bytes) -> None:
        """Fire-and-forget on a core subject."""
        try:
            await self._client().publish(subject, data)
        except (nats.errors.Error, OSError) as exc:
            raise BusError(f"cannot publish on {subject}: {exc}") from exc

    async def subscribe(
        self, subject: str, handler: Callable[[bytes], Awaitable[None]]
    ) -> Callable[[], Awaitable[None]]:
        """Call ``handler`` with each message on ``subject``; returns an async function that stops it."""

        async def on_message(msg: nats.aio.msg.Msg) -> None:
            await handler(msg.data)

        try:
            client = self._client()
            sub = await client.subscribe(subject, cb=on_message)
            await _server_has_seen(client)
        except (nats.errors.Error, OSError) as exc:
            raise BusError(f"cannot subscribe to {subject}: {exc}") from exc

        async def stop() -> None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
                await _server_has_seen(client)

        return stop

    async def request(self, subject: str, data: bytes, *, wait: float = 5.0) -> bytes:
        """Ask one responder on ``subject`` and return its answer.

        Raises BusNoResponder when nobody serves the subject, BusError when the answer does not come
        in time or the connection fails.
        """
        try:
            msg = await self._client().request(subject, data, timeout=wait)
        except nats.errors.NoRespondersError as exc:
            raise BusNoResponder(f"nobody answers on {subject}") from exc
        except nats.errors.TimeoutError as exc:
            raise BusError(f"no answer on {subject} within {wait:g} s") from exc
        except (nats.errors.Error, OSError) as exc:
            raise BusError(f"cannot send a request on {subject}: {exc}") from exc
        return msg.data

    async def serve(
        self, subject: str, handler: Callable[[bytes], Awaitable[bytes]], *, queue: str
    ) -> Callable[[], Awaitable[None]]:
        """Answer requests on ``subject`` with ``handler``; one member of ``queue`` gets each request.

        A handler that raises gets nothing sent back (the requester times out), so handlers should
        answer errors in their own reply format. Returns an async function that stops serving.
        """

        running: set[asyncio.Task[None]] = set()

        async def answer(msg: nats.aio.msg.Msg) -> None:
            try:
                reply = await handler(msg.data)
            except Exception:
                log.exception("handler for %s failed", subject)
                return
            if msg.reply:
                with contextlib.suppress(nats.errors.Error, OSError):
                    await msg.respond(reply)

        async def on_message(msg: nats.aio.msg.Msg) -> None:
            # One task per request: a slow answer must not hold up the ones behind it.
            task = asyncio.create_task(answer(msg))
            running.add(task)
            task.add_done_callback(running.discard)

        try:
            client = self._client()
            sub = await client.subscribe(subject, queue=queue, cb=on_message)
            await _server_has_seen(client)
        except (nats.errors.Error, OSError) as exc:
            raise BusError(f"cannot serve {subject}: {exc}") from exc

        async def stop() -> None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
                await _server_has_seen(client)
            for task in list(running):
                task.cancel()

        return stop


async def _server_has_seen(client: Client) -> None:
    """Return once the server has processed what this client sent so far (a subscription, say),
    so that a message from another connection right after finds it.

    One flush is not enough: nats-py writes the PING ahead of commands still in its pending buffer,
    so the PONG can come back before the SUB was even sent. The second PING leaves after them.
    """
    await client.flush()
    await client.flush()


def _is_auth_error(exc: BaseException) -> bool:
    return "authorization violation" in str(exc).lower()


def _cancel_requested() -> bool:
    """Whether this task was asked to stop. nats-py sometimes swallows a cancellation that arrives
    while it connects (returning a live connection, or failing), which would leave a plane that stops
    during start-up running forever."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
