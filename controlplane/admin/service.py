"""Frontend and backend storage (``controlplane.admin.crud``'s semantics), plus the checks OllamaFlow lacks.

- A frontend may only name existing backends (409); a backend named by a frontend cannot be deleted
  (409 InUse). Row locks make both checks hold under concurrent requests: writers of a frontend take
  FOR SHARE on the backends it names, a backend delete takes FOR UPDATE on its row.
- A deleted frontend leaves the ``Frontends`` of every API key (``controlplane.admin.apikey_service``)
  in the same transaction.
- A frontend's Hostname is unique among frontends, ignoring case (409): checked here with a clear
  message, and by a unique index for writes that race.
- A backend's BearerToken, Headers values and Querystring values are write-only
  (``controlplane.admin.secrets``: reads show names, "<redacted>" in a write keeps the stored value).
- ``FrontendService.edit_required`` adds a model to (or takes it out of) RequiredModels in one
  transaction holding the row lock, so that concurrent pulls, PATCHes and PUTs, through any number of
  control-plane replicas, never lose an edit.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from controlplane.admin.crud import Cap, Service, constraint_name, field_names, given, require_rows
from controlplane.admin.limits import check_fields
from controlplane.admin.schemas import BackendIn, BackendOut, FrontendIn, FrontendOut
from controlplane.admin.secrets import (
    REDACTED,
    carries_new_secret,
    keep_headers,
    keep_querystring,
    redact_headers,
    redact_querystring,
)
from controlplane.clock import Clock
from controlplane.db import Database
from controlplane.errors import ApiError
from controlplane.publish.builder import backend_base_url
from controlplane.tables import FRONTEND_HOSTNAME_INDEX, ApiKeyRow, BackendRow, FrontendRow
from shared.models import model_key

__all__ = ["BackendService", "FrontendService"]

_FRONTEND_FIELDS = field_names(FrontendIn, without=["identifier"])
_SECRET_FIELDS = ["bearer_token", "querystring", "headers"]
_BACKEND_FIELDS = field_names(BackendIn, without=["identifier", *_SECRET_FIELDS])
_FRONTEND_OUT = field_names(FrontendOut)
_BACKEND_OUT = field_names(BackendOut, without=["has_bearer_token", "url_prefix", *_SECRET_FIELDS])
_NO_KEY = (
    "BearerToken, Headers and Querystring values are secrets, and this control plane has no secrets key to "
    "seal them with for the data planes: set OLLAMAFLOW_SECRETS_KEY or OLLAMAFLOW_SECRETS_KEY_FILE "
    "(the same key on every control plane and data plane)"
)


def _frontend_fields(body: msgspec.Struct) -> dict[str, Any]:
    """The given frontend fields, sticky header names lower-cased and without repeats (HTTP header
    names are case-insensitive; the data plane compares them lower-case)."""
    fields = given(body, _FRONTEND_FIELDS)
    if "sticky_headers" in fields:
        fields["sticky_headers"] = list(dict.fromkeys(name.lower() for name in fields["sticky_headers"]))
    return fields


def frontend_out(row: FrontendRow) -> FrontendOut:
    return FrontendOut(**{name: getattr(row, name) for name in _FRONTEND_OUT})


def backend_out(row: BackendRow) -> BackendOut:
    return BackendOut(
        **{name: getattr(row, name) for name in _BACKEND_OUT},
        has_bearer_token=bool(row.bearer_token),
        headers=redact_headers(row.headers),
        querystring=redact_querystring(row.querystring),
        url_prefix=backend_base_url(row.hostname, row.port, row.ssl),
    )


class FrontendService(Service[FrontendRow, FrontendOut]):
    """CRUD of frontends."""

    table = FrontendRow
    what = "frontend"
    a_what = "a frontend"

    def _apply(self, row: FrontendRow, body: msgspec.Struct) -> None:
        for name, value in _frontend_fields(body).items():
            setattr(row, name, value)

    async def _check(self, session: AsyncSession, row: FrontendRow) -> None:
        await require_rows(session, BackendRow, row.backends, "Backends", "backend")
        await _check_hostname(session, row)

    async def _before_delete(self, session: AsyncSession, row: FrontendRow) -> None:
        await _unlist_frontend(session, row.identifier, self._clock.now())

    def _out(self, row: FrontendRow) -> FrontendOut:
        return frontend_out(row)

    async def edit_required(self, identifier: str, model: str, *, present: bool) -> bool:
        """Add ``model`` to the frontend's RequiredModels (or take every spelling of it out), reading
        and writing the list under the row lock; whether the list had it before."""
        key = model_key(model)
        async with self._db.session() as session:
            row = await self._row(session, identifier, lock=True)
            current = list(row.required_models)
            had = any(model_key(name) == key for name in current)
            if present == had:
                return had
            changed = [*current, model] if present else [name for name in current if model_key(name) != key]
            check_fields({"required_models": changed})  # a pull may not grow it past its limits
            row.required_models = changed
            row.last_update_utc = self._clock.now()
            await self._commit(session, identifier)
        return had

    def _conflict(self, exc: IntegrityError, identifier: str) -> ApiError:
        if constraint_name(exc) == FRONTEND_HOSTNAME_INDEX:  # a concurrent write took the Hostname first
            return ApiError("Conflict", "Hostname: another frontend has just taken this Hostname")
        return super()._conflict(exc, identifier)


async def _check_hostname(session: AsyncSession, row: FrontendRow) -> None:
    """409 if another frontend has the same Hostname (ignoring case; "*" included): only one could
    be routed to. A write that leaves a frontend's Hostname as it was passes, so that frontends sharing
    a Hostname from before it had to be unique can still be changed (the migration says which)."""
    state = sa.inspect(row)
    if state.persistent and not state.attrs.hostname.history.has_changes():
        return
    hostname = col(FrontendRow.hostname)
    query = select(FrontendRow.identifier).where(
        sa.func.lower(hostname) == row.hostname.lower(), col(FrontendRow.identifier) != row.identifier
    )
    other = (await session.exec(query.limit(1))).first()
    if other is not None:
        raise ApiError(
            "Conflict",
            f"Hostname: frontend '{other}' already has Hostname '{row.hostname}' (Hostnames are unique "
            "among frontends, ignoring case); change or delete that one first",
        )


async def _unlist_frontend(session: AsyncSession, identifier: str, now: datetime) -> None:
    """Take a frontend being deleted out of every API key's Frontends (so that a frontend created later
    under the same id is not opened to them)."""
    frontends = col(ApiKeyRow.frontends)
    statement = (
        sa.update(ApiKeyRow)
        .where(frontends.contains([identifier]))
        .values(frontends=frontends.op("-")(sa.literal(identifier, sa.Text)), last_update_utc=now)
        .execution_options(synchronize_session=False)
    )
    await session.exec(statement)


class BackendService(Service[BackendRow, BackendOut]):
    """CRUD of backends. Their secrets are write-only (``controlplane.admin.secrets``); new secret values
    are refused when the control plane cannot seal them (``can_seal`` False: no secrets key)."""

    table = BackendRow
    what = "backend"
    a_what = "a backend"

    def __init__(
        self,
        db: Database,
        *,
        clock: Clock,
        on_change: Callable[[], None],
        cap: Cap | None = None,
        can_seal: bool = True,
    ) -> None:
        super().__init__(db, clock=clock, on_change=on_change, cap=cap)
        self._can_seal = can_seal

    def _apply(self, row: BackendRow, body: msgspec.Struct) -> None:
        values = self._values(body, row)
        assert values is not None  # with the stored row at hand, every body has its values
        for name, value in values.items():
            setattr(row, name, value)

    def _changes(self, body: msgspec.Struct) -> dict[str, Any] | None:
        return self._values(body, None)

    def _values(self, body: msgspec.Struct, stored: BackendRow | None) -> dict[str, Any] | None:
        """The columns ``body`` sets on the backend ``stored``. Without ``stored`` (a write that does not
        read the row): None if the body keeps stored secret values ("<redacted>" in Headers or
        Querystring), which only the stored row has."""
        secrets = given(body, _SECRET_FIELDS)
        if not self._can_seal and carries_new_secret(
            secrets.get("bearer_token"), secrets.get("headers"), secrets.get("querystring")
        ):
            raise ApiError.bad_request(_NO_KEY)
        values = given(body, _BACKEND_FIELDS)
        if "headers" in secrets:
            headers = secrets["headers"]
            if stored is None and REDACTED in headers.values():
                return None
            values["headers"] = keep_headers(headers, (stored.headers if stored is not None else {}) or {})
        if "querystring" in secrets:
            querystring = secrets["querystring"]
            if stored is None and querystring and REDACTED in querystring:
                return None
            values["querystring"] = keep_querystring(
                querystring, stored.querystring if stored is not None else None
            )
        token = secrets.get("bearer_token", REDACTED)
        if token != REDACTED:  # omitted or "<redacted>" keeps the stored token; null or "" clears it
            values["bearer_token"] = token or None
        return values

    async def _before_delete(self, session: AsyncSession, row: BackendRow) -> None:
        query = select(FrontendRow.identifier).where(col(FrontendRow.backends).contains([row.identifier]))
        users = sorted((await session.exec(query)).all())
        if users:
            names = ", ".join(f"'{u}'" for u in users)
            raise ApiError(
                "InUse",
                f"backend '{row.identifier}' is listed in the Backends of frontend {names}; "
                "remove it there first",
            )

    def _out(self, row: BackendRow) -> BackendOut:
        return backend_out(row)
