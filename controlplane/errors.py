"""Every error the admin API sends, in OllamaFlow's shape, with the HTTP status and body agreeing.

    {"Error": "BadRequest", "Message": "<fixed text for the kind>", "StatusCode": 400,
     "Description": "<what exactly was wrong, naming the field>"}

Services raise ApiError; the handlers here also turn Litestar's own exceptions (bad JSON, validation,
unknown routes, wrong methods) and database outages into that shape. Nothing leaks a traceback.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import ResponseSpec
from litestar.types import ExceptionHandlersMap
from sqlalchemy.exc import DataError, DBAPIError, OperationalError

__all__ = ["ApiError", "ErrorBody", "error_responses", "exception_handlers"]

log = logging.getLogger("ollamaflow.controlplane")

# OllamaFlow's error kinds and their fixed messages, plus MethodNotAllowed and ServiceUnavailable
# (OllamaFlow answers those with mismatched codes).
_MESSAGES = {
    "AuthenticationFailed": "Your authentication material was not accepted.",
    "AuthorizationFailed": "Your authentication material was accepted, but you are not authorized to "
    "perform this request.",
    "BadRequest": "We were unable to discern your request.  Please check your URL, query, and request body.",
    "Conflict": "Operation failed as it would create a conflict with an existing resource.",
    "InternalError": "An internal error has been encountered.",
    "InUse": "The requested resource is in use.",
    "NotFound": "The requested resource was not found.",
    "MethodNotAllowed": "The requested method is not supported by this resource.",
    "TooLarge": "The size of your request exceeds the maximum allowed by this server.",
    "ServiceUnavailable": "The service is not ready; please retry shortly.",
}
_BY_STATUS = {
    400: "BadRequest",
    401: "AuthenticationFailed",
    403: "AuthorizationFailed",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    413: "TooLarge",
    503: "ServiceUnavailable",
}
_STATUS = {kind: status for status, kind in _BY_STATUS.items()} | {"InUse": 409}


class ErrorBody(msgspec.Struct, kw_only=True, rename="pascal", omit_defaults=True):
    """OllamaFlow's ApiErrorResponse."""

    error: str
    message: str
    status_code: int
    context: Any = None
    description: str = ""


class ApiError(Exception):
    """An error the admin API answers with; ``kind`` is one of OllamaFlow's error names."""

    def __init__(self, kind: str, description: str = "", *, status: int | None = None) -> None:
        super().__init__(description or kind)
        self.kind = kind
        self.status = status or _STATUS.get(kind, 500)
        self.description = description

    @classmethod
    def bad_request(cls, description: str) -> ApiError:
        return cls("BadRequest", description)

    @classmethod
    def not_found(cls, what: str, identifier: str) -> ApiError:
        return cls("NotFound", f"{what} '{identifier}' does not exist")

    def body(self) -> ErrorBody:
        return ErrorBody(
            error=self.kind,
            message=_MESSAGES.get(self.kind, _MESSAGES["InternalError"]),
            status_code=self.status,
            description=self.description,
        )


def _respond(
    error: ApiError, request: Request | None = None, *, headers: dict[str, str] | None = None
) -> Response[ErrorBody | bytes]:
    headers = dict(headers or {})
    if error.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    # A HEAD answer carries no body.
    body: ErrorBody | bytes = b"" if request is not None and request.method == "HEAD" else error.body()
    return Response(body, status_code=error.status, headers=headers, media_type=MediaType.JSON)


def _on_api_error(request: Request, exc: ApiError) -> Response[ErrorBody | bytes]:
    return _respond(exc, request)


def _on_validation(request: Request, exc: ValidationException) -> Response[ErrorBody | bytes]:
    problems = [_describe(item) for item in exc.extra or [] if isinstance(item, dict)]
    return _respond(ApiError.bad_request("; ".join(problems) or str(exc.detail)), request)


def _describe(item: dict[str, Any]) -> str:
    key, message, source = str(item.get("key", "")), str(item.get("message", "")), item.get("source")
    if key == "data" and source == "body":
        # Litestar names the whole body "data"; an empty body shows up as the bare message "'data'".
        if message.strip("'") == "data":
            return "request body: a JSON object is required"
        return f"request body: {message}"
    return f"{key}: {message}" if key else message


def _on_http(request: Request, exc: HTTPException) -> Response[ErrorBody | bytes]:
    kind = _BY_STATUS.get(exc.status_code, "BadRequest" if exc.status_code < 500 else "InternalError")
    detail = str(exc.detail or "")
    if exc.status_code == 400 and "JSON" in detail:
        detail = f"request body: {detail}"
    # Litestar's own exceptions carry the headers their status needs, e.g. Allow on a 405.
    return _respond(ApiError(kind, detail, status=exc.status_code), request, headers=exc.headers)


def _on_database(request: Request, exc: DBAPIError) -> Response[ErrorBody | bytes]:
    if isinstance(exc, DataError):
        # A value Postgres refuses (e.g. a NUL character in a string).
        reason = str(exc.orig).splitlines()[0] if exc.orig else "invalid value"
        return _respond(ApiError.bad_request(f"the database rejected a value: {reason}"), request)
    if isinstance(exc, OperationalError) or exc.connection_invalidated:
        log.warning("database unavailable during %s %s: %s", request.method, request.url.path, exc.orig)
        return _respond(ApiError("ServiceUnavailable", "the configuration database is unavailable"), request)
    return _on_unexpected(request, exc)


def _on_unexpected(request: Request, exc: Exception) -> Response[ErrorBody | bytes]:
    log.error("unexpected error in %s %s", request.method, request.url.path, exc_info=exc)
    return _respond(ApiError("InternalError", "see the control-plane log"), request)


_DOCUMENTED = {
    400: "Invalid request: the Description names the field or parameter",
    401: "No valid admin token (AuthenticationFailed)",
    404: "No such resource (NotFound)",
    409: "Conflict: the Identifier or a frontend's Hostname is taken, the body names a resource that does "
    "not exist, a cap on their number is reached, or (InUse) a frontend still lists the backend",
    503: "Starting, or a dependency (database, NATS) is unavailable (ServiceUnavailable)",
}


def error_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI documentation of the error answers a route can give, all in the ErrorBody shape."""
    return {
        status: ResponseSpec(
            data_container=ErrorBody, description=_DOCUMENTED[status], generate_examples=False
        )
        for status in statuses
    }


def exception_handlers() -> ExceptionHandlersMap:
    return {
        ApiError: _on_api_error,
        ValidationException: _on_validation,
        HTTPException: _on_http,
        DBAPIError: _on_database,
        Exception: _on_unexpected,
    }
