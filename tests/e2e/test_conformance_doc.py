"""docs/conformance.md against the running code.

Every route the data plane serves must be a row of the tables with the methods it takes, and every
cell must say what a client really gets: each row's request goes through a real data plane to an
Ollama simulator and to an OpenAI-format simulator, and the status must be the cell's: the one written
after "not supported:", else the one after "No control plane answering:" (this test runs none: model
management asks the control plane over NATS), else a 2xx. A change in what the data plane serves that
the page does not follow fails here.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from dataplane.app import DataPlane
from dataplane.settings import DataPlaneSettings
from ollamaflow.sim import SimConfig, running_sim
from shared.snapshot import ApiFormat, BackendView, FrontendView, SnapshotContent
from tests.dataplane.harness import SnapshotWriter, running_dataplane

DOC = Path(__file__).resolve().parents[2] / "docs" / "conformance.md"
# The data plane's own probes and metrics, not part of either API.
OWN_ROUTES = {"/healthz", "/readyz", "/metrics"}
HOSTS: dict[ApiFormat, str] = {"Ollama": "ollama.test", "OpenAI": "openai.test"}
CHAT = [{"role": "user", "content": "Hello"}]
BLOB = b"conformance blob"
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()


@dataclass(frozen=True)
class Row:
    methods: tuple[str, ...]
    path: str  # as the page writes it: /api/blobs/:digest, /v1/models/{id}
    cells: dict[ApiFormat, str]


def _rows() -> list[Row]:
    rows = []
    for line in DOC.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        words = re.findall(r"`([^`]+)`", cells[0])
        methods = tuple(w for w in words if w.isupper())
        paths = [w for w in words if w.startswith("/")]
        if methods and len(paths) == 1:
            rows.append(Row(methods, paths[0], {"Ollama": cells[1], "OpenAI": cells[2]}))
    return rows


ROWS = _rows()


def _routes() -> dict[str, frozenset[str]]:
    """Path -> methods of the data plane's route table (built, not started: nothing connects).

    A key ending in "/" (other than "/") is a prefix: ``/v1/models/`` takes ``/v1/models/{id}``.
    """
    app = DataPlane(DataPlaneSettings(dataplane_id="conformance", allow_unsigned_snapshots=True))
    return {path: frozenset(route.methods) for path, route in app._routes.items() if path not in OWN_ROUTES}


def _placeholder(doc_path: str, route: str) -> bool:
    """Whether the page's ``/api/blobs/:digest`` or ``/v1/models/{id}`` is the prefix route ``route``."""
    rest = doc_path[len(route) :]
    return route != "/" and route.endswith("/") and doc_path.startswith(route) and rest[:1] in (":", "{")


def _served(doc_path: str, routes: dict[str, frozenset[str]]) -> frozenset[str] | None:
    """The methods the data plane takes on a documented path, None if it has no route for it."""
    if doc_path in routes:
        return routes[doc_path]
    return next((methods for route, methods in routes.items() if _placeholder(doc_path, route)), None)


def test_the_page_has_rows_for_both_apis() -> None:
    paths = {row.path for row in ROWS}
    assert {
        "/api/chat",
        "/api/pull",
        "/api/blobs/:digest",
        "/v1/chat/completions",
        "/v1/models/{id}",
    } <= paths
    assert len(paths) == len(ROWS), "a path appears in two rows"


def test_every_route_is_a_row_with_its_methods() -> None:
    for route, methods in _routes().items():
        rows = [row for row in ROWS if row.path == route or _placeholder(row.path, route)]
        assert len(rows) == 1, f"{route} is served but not (once) in docs/conformance.md"
        assert set(rows[0].methods) == methods, f"{route}: the page says {rows[0].methods}"


def test_rows_without_a_route_say_so() -> None:
    routes = _routes()
    for row in ROWS:
        if _served(row.path, routes) is None:
            for api_format, cell in row.cells.items():
                assert cell.startswith("not supported: `404`"), f"{row.path} ({api_format}) has no route"


def _expected(cell: str) -> int | None:
    """The status a cell promises here: None for a supported one (2xx), else the one it names."""
    found = re.match(r"not supported: `(\d{3})`", cell) or re.search(
        r"no control plane answering: `(\d{3})`", cell, re.IGNORECASE
    )
    return int(found.group(1)) if found else None


SAMPLES: dict[str, tuple[str, dict[str, Any] | bytes | None]] = {
    # documented path -> (path sent, JSON body or raw bytes)
    "/": ("/", None),
    "/api/version": ("/api/version", None),
    "/api/generate": ("/api/generate", {"model": "llama3.2", "prompt": "Hello", "stream": False}),
    "/api/chat": ("/api/chat", {"model": "llama3.2", "messages": CHAT, "stream": False}),
    "/api/embed": ("/api/embed", {"model": "all-minilm", "input": ["a", "b"]}),
    "/api/embeddings": ("/api/embeddings", {"model": "all-minilm", "prompt": "a"}),
    "/api/tags": ("/api/tags", None),
    "/api/ps": ("/api/ps", None),
    "/api/show": ("/api/show", {"model": "llama3.2"}),
    "/api/pull": ("/api/pull", {"model": "llama3.2", "stream": False}),
    "/api/delete": ("/api/delete", {"model": "no-such-model"}),
    "/api/copy": ("/api/copy", {"source": "llama3.2", "destination": "copied"}),
    "/api/create": ("/api/create", {"model": "created", "from": "llama3.2", "stream": False}),
    "/api/push": ("/api/push", {"model": "llama3.2", "stream": False}),
    "/api/blobs/:digest": (f"/api/blobs/{DIGEST}", BLOB),
    "/v1/chat/completions": ("/v1/chat/completions", {"model": "llama3.2", "messages": CHAT}),
    "/v1/completions": ("/v1/completions", {"model": "llama3.2", "prompt": "Hello"}),
    "/v1/embeddings": ("/v1/embeddings", {"model": "all-minilm", "input": "a"}),
    "/v1/models": ("/v1/models", None),
    "/v1/models/{id}": ("/v1/models/llama3.2:latest", None),
}


def test_every_row_has_a_sample_request() -> None:
    assert {row.path for row in ROWS} == set(SAMPLES)


@pytest.fixture
async def dataplane_url(dp_settings: DataPlaneSettings, writer: SnapshotWriter) -> AsyncIterator[str]:
    """A data plane with one frontend per backend format, told apart by Host."""
    async with (
        running_sim(SimConfig()) as ollama_sim,
        running_sim(SimConfig(format="openai")) as openai_sim,
        running_dataplane(dp_settings) as dp,
    ):
        sims: dict[ApiFormat, str] = {"Ollama": ollama_sim, "OpenAI": openai_sim}
        backends = tuple(
            BackendView(id=fmt, base_url=url, api_format=fmt, models=SimConfig().models, models_known=True)
            for fmt, url in sims.items()
        )
        frontends = tuple(
            # The model-management rows describe a frontend that allows it (the page says so).
            FrontendView(id=fmt, hostname=HOSTS[fmt], backends=(fmt,), allow_model_management=True)
            for fmt in sims
        )
        await writer.publish(SnapshotContent(frontends=frontends, backends=backends), 1)
        await dp.wait_revision(1)
        yield dp.url


async def test_each_cell_is_what_a_client_gets(dataplane_url: str) -> None:
    failures = []
    async with httpx.AsyncClient(base_url=dataplane_url, timeout=30) as client:
        for row in ROWS:
            path, body = SAMPLES[row.path]
            for api_format, cell in row.cells.items():
                expected = _expected(cell)
                # POST before HEAD: a blob exists once uploaded.
                for method in sorted(row.methods, key=lambda m: m == "HEAD"):
                    raw = body if isinstance(body, bytes) and method != "HEAD" else None
                    response = await client.request(
                        method,
                        path,
                        json=body if isinstance(body, dict) else None,
                        content=raw,
                        headers={"Host": HOSTS[api_format]},
                    )
                    ok = response.is_success if expected is None else response.status_code == expected
                    if not ok:
                        failures.append(
                            f"{method} {path} on an {api_format} backend: {response.status_code} "
                            f"{response.text[:200]!r}, the page says {cell[:60]!r}"
                        )
                    elif expected is not None and method != "HEAD":
                        error = response.json()["error"]  # the client's format: /api/* Ollama's
                        assert isinstance(error, str if path.startswith("/api/") else dict), error
    assert not failures, "\n".join(failures)
