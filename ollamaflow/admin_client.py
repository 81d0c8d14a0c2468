"""A small synchronous client of the admin API (``/v1.0/*``) for the admin commands.

Where to talk and with what token is settled once, in ``resolve_target``: a flag first, then the
environment (``OLLAMAFLOW_URL``, ``OLLAMAFLOW_ADMIN_TOKEN``), then what ``ollamaflow up`` left in its
data directory (``controlplane-url``, ``admin-token``), then the local default. Every failure becomes
an ``AdminError`` carrying the API's own message, so commands print one clear line instead of a
traceback.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ollamaflow.datadir import DEFAULT_DATA_DIR, DataDir

__all__ = [
    "DEFAULT_ADMIN_URL",
    "AdminClient",
    "AdminError",
    "AdminTarget",
    "resolve_target",
]

DEFAULT_ADMIN_URL = "http://127.0.0.1:43412"
URL_ENV = "OLLAMAFLOW_URL"
TOKEN_ENV = "OLLAMAFLOW_ADMIN_TOKEN"
# Admin answers are small; a slow one is a sick control plane, not a big answer.
DEFAULT_TIMEOUT = 30.0


class AdminError(Exception):
    """A request to the admin API failed; ``str()`` is a sentence fit to print."""

    def __init__(self, message: str, status: int | None = None, description: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.description = description
        """The API's own Description of what went wrong ("" if it gave none)."""


@dataclass(frozen=True, slots=True)
class AdminTarget:
    url: str
    token: str | None
    url_source: str
    token_source: str


def resolve_target(
    url: str | None = None,
    token: str | None = None,
    data_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> AdminTarget:
    """The admin API to talk to and its token (see the module's docstring for the order)."""
    env = os.environ if environ is None else environ
    data = DataDir((data_dir or DEFAULT_DATA_DIR).resolve())
    if url:
        chosen_url, url_source = url, "--url"
    elif env.get(URL_ENV):
        chosen_url, url_source = env[URL_ENV], URL_ENV
    elif (stored := _read(data.controlplane_url_file)) is not None:
        chosen_url, url_source = stored, str(data.controlplane_url_file)
    else:
        chosen_url, url_source = DEFAULT_ADMIN_URL, "default"
    if token:
        chosen_token, token_source = token, "--token"
    elif env.get(TOKEN_ENV):
        chosen_token, token_source = env[TOKEN_ENV], TOKEN_ENV
    elif (stored := _read(data.admin_token_file)) is not None:
        chosen_token, token_source = stored, str(data.admin_token_file)
    else:
        chosen_token, token_source = None, "none"
    return AdminTarget(chosen_url.rstrip("/"), chosen_token, url_source, token_source)


def _read(path: Path) -> str | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return text or None


class AdminClient:
    """JSON in, JSON out over ``/v1.0``; use as a context manager."""

    def __init__(
        self, target: AdminTarget, *, timeout: float = DEFAULT_TIMEOUT, transport: Any = None
    ) -> None:
        headers = {"Accept": "application/json"}
        if target.token:
            headers["Authorization"] = f"Bearer {target.token}"
        self.target = target
        self._http = httpx.Client(base_url=target.url, headers=headers, timeout=timeout, transport=transport)

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        return self.request("GET", path, params=params)

    def put(self, path: str, body: Any = None) -> Any:
        return self.request("PUT", path, body=body)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, body=body)

    def patch(self, path: str, body: Any = None) -> Any:
        return self.request("PATCH", path, body=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def request(
        self, method: str, path: str, *, body: Any = None, params: Mapping[str, str] | None = None
    ) -> Any:
        """The decoded JSON answer (None for an empty one); ``AdminError`` for anything but a 2xx."""
        try:
            response = self._http.request(method, path, json=body, params=params)
        except httpx.HTTPError as exc:
            raise AdminError(f"cannot reach the admin API at {self.target.url}: {exc}") from exc
        if response.status_code >= 400:
            raise _api_error(method, path, response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise AdminError(f"{method} {path}: the answer is not JSON") from exc

    def stream(self, method: str, path: str, *, body: Any = None) -> Any:
        """An ``httpx`` streaming context for a long answer (a pull's progress lines)."""
        return self._http.stream(method, path, json=body, timeout=None)

    @contextlib.contextmanager
    def lines(self, path: str) -> Iterator[Iterator[str]]:
        """The lines of a long GET answer (NDJSON) as they come; ``AdminError`` for an error answer
        or a broken connection."""
        try:
            with self._http.stream("GET", path, timeout=httpx.Timeout(DEFAULT_TIMEOUT, read=None)) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise _api_error("GET", path, resp)
                yield _checked_lines(resp, path)
        except httpx.HTTPError as exc:
            raise AdminError(f"cannot reach the admin API at {self.target.url}: {exc}") from exc


def _checked_lines(response: httpx.Response, path: str) -> Iterator[str]:
    try:
        yield from (line for line in response.iter_lines() if line.strip())
    except httpx.HTTPError as exc:
        raise AdminError(f"GET {path}: the stream broke off: {exc}") from exc


def _api_error(method: str, path: str, response: httpx.Response) -> AdminError:
    text, description = _error_text(method, path, response)
    return AdminError(text, response.status_code, description)


def _error_text(method: str, path: str, response: httpx.Response) -> tuple[str, str]:
    detail = description = ""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        description = str(payload.get("Description") or "")
        # The Description names what was wrong; Message is the fixed text of the error's kind.
        detail = description or str(payload.get("Message") or payload.get("detail") or "")
    if not detail:
        detail = response.text.strip()[:200] or response.reason_phrase
    hint = ""
    if response.status_code == 401:
        hint = f" (pass --token, set {TOKEN_ENV}, or run where `ollamaflow up` keeps its data dir)"
    return f"{method} {path} failed with {response.status_code}: {detail}{hint}", description
