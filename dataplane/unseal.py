"""Backend secrets out of the snapshot and into memory, when a snapshot is applied.

Control planes publish each backend's bearer token, headers and query string sealed with the fleet's
secrets key (``shared.secret_box``); only the applied snapshot in this process's memory holds them in
clear. A backend whose secrets this data plane cannot open (no key, another key, or the control plane
had no key and withheld them) must not get requests without its credentials: it is marked unhealthy
and ``secrets_withheld``, and the reason goes to the log and the report.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from shared.secret_box import BackendSecrets, Keyring, SealError, open_secrets
from shared.snapshot import BackendView, Snapshot

__all__ = ["WITHHELD", "Opened", "open_backends"]

# (backend id, sealed text) -> its secrets: what the previous snapshot opened, reused when unchanged
# (the key binds a text to its backend, so the id is part of the key here too).
Opened = Mapping[tuple[str, str], BackendSecrets]

WITHHELD = (
    "the control plane has no secrets key (OLLAMAFLOW_SECRETS_KEY), so its BearerToken, Headers and "
    "Querystring were left out of the snapshot"
)


def _refused(backend: BackendView) -> BackendView:
    return msgspec.structs.replace(backend, healthy=False, secrets_withheld=True)


def open_backends(
    snapshot: Snapshot, keyring: Keyring, opened: Opened | None = None
) -> tuple[Snapshot, dict[str, str], dict[tuple[str, str], BackendSecrets]]:
    """``snapshot`` with every backend's sealed secrets opened into its clear fields, the backends
    that could not be opened (id -> why), which come back unhealthy, and what was opened (hand it to
    the next call: unchanged secrets are not opened again)."""
    before = opened or {}
    now: dict[tuple[str, str], BackendSecrets] = {}
    problems: dict[str, str] = {}
    backends: list[BackendView] = []
    changed = False
    for backend in snapshot.content.backends:
        if backend.secrets_withheld:
            problems[backend.id] = WITHHELD
            backends.append(_refused(backend))
            changed = True
        elif backend.sealed_secrets:
            key = (backend.id, backend.sealed_secrets)
            try:
                secrets = before.get(key) or open_secrets(keyring, backend.id, backend.sealed_secrets)
            except SealError as exc:
                problems[backend.id] = str(exc)
                backends.append(_refused(backend))
            else:
                now[key] = secrets
                backends.append(
                    msgspec.structs.replace(
                        backend,
                        bearer_token=secrets.bearer_token,
                        querystring=secrets.querystring,
                        headers=dict(secrets.headers),
                    )
                )
            changed = True
        else:
            backends.append(backend)
    if not changed:
        return snapshot, problems, now
    content = msgspec.structs.replace(snapshot.content, backends=tuple(backends))
    return msgspec.structs.replace(snapshot, content=content), problems, now
