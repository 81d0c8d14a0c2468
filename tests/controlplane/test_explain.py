"""``POST /v1.0/frontends/{id}/explain`` against a real control plane, database and NATS.

The data plane's side of the dry-run is stood in for by a minimal responder on the same bus (a test
double of the other plane); test_explain_dataplane.py runs it against real data planes.
"""

from __future__ import annotations

import httpx
import pytest

from controlplane.settings import Settings
from shared.bus import Bus, BusNames
from shared.wire.explain import ExplainCandidate, ExplainReply, ExplainRequest, decode_request, encode
from shared.wire.reports import DataPlaneReport, encode_report
from tests.controlplane.conftest import TOKEN
from tests.controlplane.harness import eventually, running_controlplane


async def _frontend(admin: httpx.AsyncClient) -> None:
    resp = await admin.put("/v1.0/backends", json={"Identifier": "b1", "Hostname": "127.0.0.1"})
    assert resp.status_code == 201, resp.text
    resp = await admin.put(
        "/v1.0/frontends", json={"Identifier": "f1", "Hostname": "chat.test", "Backends": ["b1"]}
    )
    assert resp.status_code == 201, resp.text


@pytest.mark.usefixtures("controlplane")
async def test_unknown_frontend_is_404_and_bad_bodies_are_400(admin: httpx.AsyncClient) -> None:
    resp = await admin.post("/v1.0/frontends/nope/explain", json={"Model": "m"})
    assert resp.status_code == 404
    assert resp.json()["Error"] == "NotFound" and "nope" in resp.json()["Description"]

    await _frontend(admin)
    for body, field in (
        ({"Kind": "chat"}, "Kind"),
        ({"ApiFormat": "Anthropic"}, "ApiFormat"),
        ({"Headers": {"bad header": "x"}}, "Headers"),
        ({"Headers": {"x-a": 1}}, "Headers"),
        ({"Model": 5}, "Model"),
    ):
        resp = await admin.post("/v1.0/frontends/f1/explain", json=body)
        assert resp.status_code == 400, resp.text
        assert resp.json()["Error"] == "BadRequest" and field in resp.json()["Description"]


@pytest.mark.usefixtures("controlplane")
async def test_needs_the_admin_token(anonymous: httpx.AsyncClient) -> None:
    resp = await anonymous.post("/v1.0/frontends/f1/explain", json={})
    assert resp.status_code == 401 and resp.json()["Error"] == "AuthenticationFailed"


async def test_asks_one_live_data_plane_and_returns_its_answer(settings: Settings) -> None:
    other_plane = Bus(settings.nats_url, BusNames(settings.bus_namespace), client_name="test-dataplane")
    await other_plane.connect()
    asked: list[ExplainRequest] = []

    async def answer(data: bytes) -> bytes:
        request = decode_request(data)
        asked.append(request)
        return encode(
            ExplainReply(
                dataplane="dp-1",
                revision=7,
                frontend="f1",
                strategy="ModelAware",
                sticky_key="",
                order=["b1"],
                candidates=[
                    ExplainCandidate(
                        backend="b1", eligible=True, reason="model loaded", in_flight=2, limit=4, loaded=True
                    )
                ],
            )
        )

    try:
        with running_controlplane(settings) as running:
            async with httpx.AsyncClient(
                base_url=running.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
            ) as admin:
                await _frontend(admin)
                body = {
                    "Model": "llama3",
                    "Kind": "embeddings",
                    "ApiFormat": "OpenAI",
                    "Headers": {"X-Conversation-Id": "c-1"},
                }

                # No data plane has reported yet.
                resp = await admin.post("/v1.0/frontends/f1/explain", json=body)
                assert resp.status_code == 503, resp.text
                assert resp.json()["Error"] == "ServiceUnavailable"
                assert "no live data plane" in resp.json()["Description"]

                # One has, but nothing serves dry-runs (e.g. an older data plane).
                await other_plane.publish_report(encode_report(DataPlaneReport(id="dp-1")))
                await eventually(lambda: running.plane.registry.live_ids() == {"dp-1"}, what="dp-1 live")
                resp = await admin.post("/v1.0/frontends/f1/explain", json=body)
                assert resp.status_code == 503, resp.text
                assert "no data plane answers" in resp.json()["Description"]

                stop = await other_plane.serve(other_plane.names.explain_subject, answer, queue="dataplanes")
                try:
                    resp = await admin.post("/v1.0/frontends/f1/explain", json=body)
                finally:
                    await stop()
                assert resp.status_code == 200, resp.text
                assert resp.json() == {
                    "Dataplane": "dp-1",
                    "Revision": 7,
                    "Status": 200,
                    "Error": "",
                    "Frontend": "f1",
                    "Strategy": "ModelAware",
                    "StickyKey": "",
                    "Order": ["b1"],
                    "Candidates": [
                        {
                            "Backend": "b1",
                            "Eligible": True,
                            "Reason": "model loaded",
                            "InFlight": 2,
                            "Limit": 4,
                            "Loaded": True,
                        }
                    ],
                }
                # The data plane was asked about a request to the frontend's host, headers lower-case.
                assert asked == [
                    ExplainRequest(
                        host="chat.test",
                        kind="embeddings",
                        api_format="OpenAI",
                        model="llama3",
                        headers={"x-conversation-id": "c-1"},
                    )
                ]

                # Defaults: a completions request in the Ollama format.
                stop = await other_plane.serve(other_plane.names.explain_subject, answer, queue="dataplanes")
                try:
                    resp = await admin.post("/v1.0/frontends/f1/explain", json={"Model": "m"})
                finally:
                    await stop()
                assert resp.status_code == 200, resp.text
                assert asked[-1] == ExplainRequest(host="chat.test", model="m")

                # An answer that is not an ExplainReply.
                async def garbage(_data: bytes) -> bytes:
                    return b"{not json"

                stop = await other_plane.serve(other_plane.names.explain_subject, garbage, queue="dataplanes")
                try:
                    resp = await admin.post("/v1.0/frontends/f1/explain", json=body)
                finally:
                    await stop()
                assert resp.status_code == 503 and "unreadable" in resp.json()["Description"]
    finally:
        await other_plane.close()


@pytest.mark.usefixtures("controlplane")
async def test_the_route_is_in_the_openapi_schema(anonymous: httpx.AsyncClient) -> None:
    schema = (await anonymous.get("/schema/openapi.json")).json()
    operation = schema["paths"]["/v1.0/frontends/{identifier}/explain"]["post"]
    assert set(operation["responses"]) >= {"200", "400", "401", "404", "503"}
    body = schema["components"]["schemas"]
    assert {"Model", "Kind", "ApiFormat", "Headers"} <= set(body["ExplainIn"]["properties"])
    assert {"Order", "Candidates", "StickyKey"} <= set(body["ExplainOut"]["properties"])
    frontend = body["FrontendIn"]["properties"]
    assert {"StickyHeaders", "QueueSize", "QueueTimeoutMs"} <= set(frontend)
    # The limits' units are documented where clients read them.
    backend = body["BackendIn"]["properties"]
    assert "per second" in backend["RateLimitRequestsThreshold"]["description"]
    assert "in flight" in backend["MaxParallelRequests"]["description"]
