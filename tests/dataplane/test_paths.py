"""A client's path never becomes a backend's path: routes match the raw path, blob digests are checked.

The attack that motivated it: ``POST /api/blobs/..%2F..%2Fapi%2Fgenerate`` was served by the backend's
``/api/generate`` (and ``..%2F..%2Fapi%2Fpull`` pulled a model onto it), past every frontend rule.
Every route of the data plane is tried with encoded traversal, double encoding, backslashes, ``;``,
``?``, ``#`` and NUL; the backend, a recorder, must only ever see the fixed paths of the API.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest

from dataplane.http.paths import blob_digest, model_id, raw_path
from shared.snapshot import BackendView
from tests.dataplane.harness import RunningDataPlane, SnapshotWriter, serve_frontend
from tests.dataplane.recorder import Recorder, recorder

DIGEST = "sha256:" + "ab" * 32

# Paths a backend may legitimately be asked for while serving these requests.
FIXED_BACKEND_PATHS = {
    "/api/tags",
    "/api/ps",
    "/v1/models",
    "/api/show",
    f"/api/blobs/{DIGEST}",
}

ROUTES = [
    "/",
    "/api/version",
    "/healthz",
    "/readyz",
    "/api/generate",
    "/api/chat",
    "/api/embed",
    "/api/embeddings",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/api/tags",
    "/api/ps",
    "/api/show",
    "/v1/models",
    "/v1/models/llama3",
    "/api/pull",
    "/api/delete",
    "/api/copy",
    "/api/create",
    "/api/push",
    f"/api/blobs/{DIGEST}",
    "/api/blobs",
]

SUFFIXES = [
    "/..%2F..%2Fapi%2Fpull",
    "%2F..%2F..%2Fapi%2Fgenerate",
    "/%2e%2e/%2e%2e/api/generate",
    "/%252e%252e%252fapi%252fpull",
    "%252F..%252F..%252Fapi%252Fgenerate",
    "\\..\\..\\api\\pull",
    "/..\\..\\api\\generate",
    ";/../../api/pull",
    ";x=y",
    "%3F/../../api/pull",
    "%23/../../api/generate",
    "%00/../../api/pull",
    "/../../api/pull",
    "/./../api/generate",
    "//api/pull",
]


def test_raw_path_keeps_every_escape() -> None:
    scope = {"path": "/api/blobs/../../api/pull", "raw_path": b"/api/blobs/..%2F..%2Fapi%2Fpull"}
    assert raw_path(scope) == "/api/blobs/..%2F..%2Fapi%2Fpull"
    # A server that gives no raw path: the decoded one is escaped again, so "/" stays a separator only.
    assert raw_path({"path": "/v1/models/a b"}) == "/v1/models/a%20b"


@pytest.mark.parametrize(
    ("path", "digest"),
    [
        (f"/api/blobs/{DIGEST}", DIGEST),
        ("/api/blobs/sha256:" + "AB" * 32, "sha256:" + "AB" * 32),
        ("/api/blobs/sha256:" + "a" * 63, None),
        ("/api/blobs/sha256:" + "a" * 65, None),
        ("/api/blobs/sha256-" + "a" * 64, None),
        ("/api/blobs/sha256%3A" + "a" * 64, None),
        (f"/api/blobs/{DIGEST}/", None),
        (f"/api/blobs/{DIGEST}%2F..%2Fpull", None),
        ("/api/blobs/..%2F..%2Fapi%2Fgenerate", None),
        ("/api/blobs/", None),
        ("/api/tags", None),
    ],
)
def test_only_a_sha256_digest_is_a_blob(path: str, digest: str | None) -> None:
    assert blob_digest(path) == digest


def test_model_ids_are_decoded_for_lookup_only() -> None:
    assert model_id("/v1/models/hf.co%2Forg%2Fmodel:Q4") == "hf.co/org/model:Q4"
    assert model_id("/v1/models/llama3.2:latest") == "llama3.2:latest"
    assert model_id("/api/tags") == ""


async def _raw(url: str, method: str, target: str, body: bytes = b"") -> int:
    """Send a request with exactly this request target (no client normalises it); the status."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        head = (
            f"{method} {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode("latin-1") + body)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
        await asyncio.wait_for(reader.read(), 10)  # the rest, until the server closes
    finally:
        writer.close()
    return int(status_line.split()[1])


@pytest.fixture
async def backend(dp: RunningDataPlane, writer: SnapshotWriter) -> AsyncIterator[Recorder]:
    async with recorder() as rec:
        view = BackendView(id="rec", base_url=rec.url, models=("llama3:latest",), models_known=True)
        await serve_frontend(writer, dp, [view], allow_model_management=True)
        yield rec


async def test_no_client_path_reaches_a_backend(dp: RunningDataPlane, backend: Recorder) -> None:
    body = b'{"model": "llama3", "prompt": "x", "messages": [], "input": "x", "name": "llama3"}'
    outcomes: dict[str, int] = {}
    for route in ROUTES:
        for suffix in SUFFIXES:
            target = route.rstrip("/") + suffix if route != "/" else suffix
            for method in ("POST", "GET", "HEAD", "DELETE"):
                status = await _raw(dp.url, method, target, body if method in ("POST", "DELETE") else b"")
                outcomes[f"{method} {target}"] = status
    server_errors = {k: v for k, v in outcomes.items() if v >= 500}
    assert not server_errors, server_errors
    served = {k: v for k, v in outcomes.items() if v < 400}
    assert not served, f"an altered path was served: {served}"
    strays = [(seen.method, seen.path) for seen in backend.seen if seen.path not in FIXED_BACKEND_PATHS]
    assert not strays, f"the backend was asked for {strays}"


async def test_a_blob_goes_to_its_fixed_path(dp: RunningDataPlane, backend: Recorder) -> None:
    assert await _raw(dp.url, "HEAD", f"/api/blobs/{DIGEST}") == 200
    assert [(s.method, s.path) for s in backend.seen] == [("HEAD", f"/api/blobs/{DIGEST}")]
    for bad in ("sha256:xyz", "..%2F..%2Fapi%2Fpull", "sha256:" + "a" * 64 + "%2F..%2Fpull"):
        assert await _raw(dp.url, "POST", f"/api/blobs/{bad}", b"x") == 400
    assert len(backend.seen) == 1
