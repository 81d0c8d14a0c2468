"""The bus with authentication and per-role permissions, on a NATS of its own (tests.support.auth_nats):
nobody gets in anonymously, data planes cannot write the snapshot or act as a control plane, and
control planes can do their job. nats-py reports denials only to its error callback, so the planes'
logs are where a denial shows; these tests check both the effect and the log line."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import nats
import nats.errors
import pytest

from shared.bus import Bus
from shared.bus_connect import BusLogin
from shared.errors import BusAuthError, BusError
from tests.support.auth_nats import AuthNats, auth_nats


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthNats]:
    with auth_nats(tmp_path_factory.mktemp("authnats"), "authtest") as running:
        yield running


async def _connected(bus: Bus) -> Bus:
    await bus.connect()
    return bus


async def _received(queue: asyncio.Queue[bytes], within: float = 2.0) -> bytes:
    return await asyncio.wait_for(queue.get(), within)


def _denials(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)


async def test_nobody_gets_in_anonymously_and_a_wrong_password_is_said_clearly(
    server: AuthNats, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(BusAuthError, match="refused"):
        await Bus(server.url, server.names).connect()
    wrong = Bus(server.url, server.names, login=BusLogin(user="dataplane", password="wrong"))
    with pytest.raises(BusAuthError, match="OLLAMAFLOW_NATS_PASSWORD"):
        await wrong.connect()
    # A plane that starts with bad credentials keeps trying, saying why at ERROR level.
    caplog.set_level(logging.WARNING, logger="ollamaflow.bus")
    task = asyncio.create_task(wrong.connect_forever(retry_every=0.05))
    try:
        for _ in range(100):
            if "refused this plane's credentials" in _denials(caplog):
                break
            await asyncio.sleep(0.05)
        assert "Authorization Violation" in _denials(caplog)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_the_control_plane_writes_the_bucket_and_serves_and_hears_the_data_planes(
    server: AuthNats, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="ollamaflow.bus")
    cp, dp = await _connected(server.bus("controlplane")), await _connected(server.bus("dataplane"))
    names = server.names
    try:
        stored = await cp.read_snapshot()
        await cp.write_snapshot(b'{"cp": 1}', last=stored[1] if stored else None)
        assert (await dp.read_snapshot() or (b"", 0))[0] == b'{"cp": 1}'

        # Any key in the bucket is the control planes' (e.g. a lease beside the snapshot).
        raw = await nats.connect(
            server.url,
            user="controlplane",
            password=server.passwords["controlplane"],
            inbox_prefix=names.inbox_prefix("controlplane"),
        )
        try:
            kv = await raw.jetstream(timeout=2).key_value(names.bucket)
            await kv.put("lease.test", b"cp-1")
        finally:
            await raw.close()

        async def models(data: bytes) -> bytes:
            return b"pulled " + data

        async def explain(data: bytes) -> bytes:
            return b"explained " + data

        stops = [
            await cp.serve(names.models_subject, models, queue="controlplanes"),
            await dp.serve(names.explain_subject, explain, queue="dataplanes"),
        ]
        reports: asyncio.Queue[bytes] = asyncio.Queue()
        progress: asyncio.Queue[bytes] = asyncio.Queue()
        deltas: asyncio.Queue[bytes] = asyncio.Queue()
        await cp.subscribe_reports(reports.put)
        stops.append(await dp.subscribe(names.pulls_subject, progress.put))
        stops.append(await dp.subscribe(names.snapshot_delta_subject, deltas.put))
        await asyncio.sleep(0.1)  # the subscriptions reach the server

        await cp.publish(names.snapshot_delta_subject, b"delta")
        assert await _received(deltas) == b"delta"

        assert await dp.request(names.models_subject, b"m") == b"pulled m"
        assert await cp.request(names.explain_subject, b"f") == b"explained f"
        await dp.publish_report(b"report")
        assert await _received(reports) == b"report"
        await cp.publish(names.pulls_subject, b"50%")
        assert await _received(progress) == b"50%"
        for stop in stops:
            await stop()
        assert _denials(caplog) == ""
    finally:
        await cp.close()
        await dp.close()


async def test_a_data_plane_reads_the_snapshot_but_cannot_write_it_or_act_as_a_control_plane(
    server: AuthNats, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="ollamaflow.bus")
    names = server.names
    cp, dp = await _connected(server.bus("controlplane")), await _connected(server.bus("dataplane"))
    peer = await _connected(server.bus("dataplane"))
    try:
        stored = await cp.read_snapshot()
        await cp.write_snapshot(b'{"genuine": 1}', last=stored[1] if stored else None)
        stored = await dp.read_snapshot()
        assert stored is not None and stored[0] == b'{"genuine": 1}'
        watch = dp.watch_snapshot()
        assert await asyncio.wait_for(anext(watch), 5) == b'{"genuine": 1}'
        await watch.aclose()

        # No write: the call times out, the log says why.
        with pytest.raises(BusError):
            await dp.write_snapshot(b'{"forged": 1}', last=stored[1])
        assert (await cp.read_snapshot() or (b"", 0))[0] == b'{"genuine": 1}'
        assert f'permissions violation for publish to "$kv.{names.bucket}.' in _denials(caplog).lower()

        # No stream of its own, no deleting the bucket.
        raw = await nats.connect(
            server.url,
            user="dataplane",
            password=server.passwords["dataplane"],
            inbox_prefix=names.inbox_prefix("dataplane"),
        )
        try:
            js = raw.jetstream(timeout=1)
            with pytest.raises(nats.errors.TimeoutError):
                await js.create_key_value(bucket="mine")
            with pytest.raises(nats.errors.TimeoutError):
                await js.delete_key_value(names.bucket)
        finally:
            await raw.close()
        assert (await cp.read_snapshot() or (b"", 0))[0] == b'{"genuine": 1}'

        # No faked pull progress or snapshot delta: a peer listening on the subject hears nothing.
        progress: asyncio.Queue[bytes] = asyncio.Queue()
        await peer.subscribe(names.pulls_subject, progress.put)
        await peer.subscribe(names.snapshot_delta_subject, progress.put)
        await asyncio.sleep(0.1)
        await dp.publish(names.pulls_subject, b"100%, trust me")
        await dp.publish(names.snapshot_delta_subject, b"a delta, trust me")
        with pytest.raises(TimeoutError):
            await _received(progress, within=0.5)

        # No listening beyond its role: everything, the control planes' requests or their replies.
        for subject in (">", names.models_subject, names.inbox_prefix("controlplane") + ".>"):
            await dp.subscribe(subject, progress.put)
        await asyncio.sleep(0.3)
        denials = _denials(caplog).lower()
        assert 'permissions violation for subscription to ">"' in denials
        assert f'permissions violation for subscription to "{names.models_subject}"' in denials
        assert "_inbox.authtest.controlplane.>" in denials
        assert f'permissions violation for publish to "{names.pulls_subject}"' in denials
        assert f'permissions violation for publish to "{names.snapshot_delta_subject}"' in denials
    finally:
        for bus in (cp, dp, peer):
            await bus.close()
