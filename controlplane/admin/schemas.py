"""Request and response bodies of the frontend and backend routes: OllamaFlow's PascalCase JSON.

Defaults and ranges are OllamaFlow's; msgspec enforces them while decoding, so a bad value is a 400
naming the field. Unknown properties (``CreatedUtc``, ``Uptime``… sent back by OllamaFlow tooling) are
ignored. Backend secrets are write-only (``controlplane.admin.secrets``): responses carry
``HasBearerToken`` instead of ``BearerToken``, and ``Headers`` and ``Querystring`` with their values
replaced by ``"<redacted>"``, which a write takes as "keep the stored value".

PATCH bodies are derived from the PUT bodies (every field optional), so the two can never drift.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Union

import msgspec
from msgspec import UNSET, Meta, UnsetType

from controlplane.admin import limits
from controlplane.admin.limits import whole
from shared.snapshot import DEFAULT_STICKY_HEADERS

__all__ = [
    "ApiKeyCreate",
    "ApiKeyCreated",
    "ApiKeyIn",
    "ApiKeyOut",
    "ApiKeyPatch",
    "BackendCreate",
    "BackendIn",
    "BackendOut",
    "BackendPatch",
    "FrontendCreate",
    "FrontendIn",
    "FrontendOut",
    "FrontendPatch",
]

_INT32 = 2**31 - 1

Identifier = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=128,
        pattern=whole(rf"[^{limits.NO_SPACE}/?#]+"),
        description="1-128 characters, no whitespace, '/', '?' or '#' (it is used in URLs)",
    ),
]
# Free text: anything but NUL, which Postgres cannot store.
Text = r"^[^\x00]*$"
Name = Annotated[str, Meta(max_length=limits.NAME_LENGTH, pattern=Text)]
BackendHost = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=limits.HOSTNAME_LENGTH,
        pattern=limits.BACKEND_HOST_PATTERN,
        description="a host name (letters, digits, '-', '_', dots) or an IP address; IPv6 without brackets",
    ),
]
FrontendHost = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=limits.HOSTNAME_LENGTH,
        pattern=limits.FRONTEND_HOST_PATTERN,
        description="the Host this frontend serves: a host name or an IP address (IPv6 without brackets), "
        "or '*' for every Host no other frontend names; unique among frontends, ignoring case",
    ),
]
Port = Annotated[int, Meta(ge=1, le=65535)]
Positive = Annotated[int, Meta(ge=1, le=_INT32)]
Millis = Annotated[int, Meta(ge=0, le=_INT32)]
# Both limits hold for the whole cluster; the control plane splits them among the live data planes.
ParallelLimit = Annotated[
    int,
    Meta(
        ge=0,
        le=_INT32,
        description="requests in flight to this backend at once, all data planes together; 0: unlimited",
    ),
]
RateLimit = Annotated[
    int,
    Meta(
        ge=0,
        le=_INT32,
        description="requests per second started on this backend, all data planes together; 0: unlimited",
    ),
]
StickyMillis = Annotated[int, Meta(ge=10000, le=86400000)]
BodySize = Annotated[int, Meta(ge=1, le=2**62)]
ProbeMillis = Annotated[
    int, Meta(ge=100, le=86_400_000, description="milliseconds; omitted or null: the control plane's setting")
]
UrlPath = Annotated[
    str,
    Meta(
        max_length=limits.URL_PATH_LENGTH,
        pattern=whole(rf"/[^{limits.NO_SPACE}]*"),
        description="a path starting with '/'",
    ),
]
HeaderName = Annotated[
    str,
    Meta(
        max_length=limits.HEADER_NAME_LENGTH,
        pattern=whole(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"),
        description="an HTTP header name",
    ),
]
HeaderValue = Annotated[str, Meta(max_length=limits.HEADER_VALUE_LENGTH, pattern=whole(r"[^\r\n\x00]*"))]
Headers = Annotated[dict[HeaderName, HeaderValue], Meta(max_length=limits.HEADERS_COUNT)]
_KEEPS = '"<redacted>" keeps the stored value'
NO_BREAK = whole(r"[^\r\n\x00]*")
QUERYSTRING = whole(rf"[^{limits.NO_SPACE}#]*")
SecretToken = Annotated[
    str,
    Meta(
        max_length=limits.BEARER_TOKEN_LENGTH,
        pattern=NO_BREAK,
        description=f"write-only, never shown; {_KEEPS}",
    ),
]
SecretHeaderValue = Annotated[
    str,
    Meta(
        max_length=limits.HEADER_VALUE_LENGTH,
        pattern=NO_BREAK,
        description=f'write-only, shown as "<redacted>"; {_KEEPS}',
    ),
]
SecretHeaders = Annotated[
    dict[HeaderName, SecretHeaderValue],
    Meta(
        max_length=limits.HEADERS_COUNT,
        description='header name -> value; values are write-only, shown as "<redacted>"; a value '
        '"<redacted>" keeps the stored value of the header of that name (case-insensitive)',
    ),
]
SecretQuerystring = Annotated[
    str,
    Meta(
        max_length=limits.QUERYSTRING_LENGTH,
        pattern=QUERYSTRING,
        description="name=value pairs joined by '&'; values are write-only, shown as \"<redacted>\"; "
        'a value "<redacted>" keeps the stored value of that parameter',
    ),
]
RedactedValue = Annotated[
    str, Meta(description='"<redacted>" for a value that is set, "" for an empty one: never the value')
]
RedactedHeaders = Annotated[
    dict[HeaderName, RedactedValue],
    Meta(description='header name -> "<redacted>" ("" for an empty value): never the values'),
]
RedactedQuerystring = Annotated[
    str,
    Meta(
        description='the parameter names, each value "<redacted>" (a parameter without "=" all '
        '"<redacted>"): never the values'
    ),
]
Pinned = Annotated[
    dict[str, Any],
    Meta(
        max_length=limits.PINNED_COUNT,
        extra_json_schema={
            "propertyNames": {"pattern": Text},
            "additionalProperties": {"$ref": "#/components/schemas/" + limits.JSON_VALUE},
        },
        description=f"at most {limits.PINNED_COUNT} properties, {limits.PINNED_JSON_BYTES} bytes as compact "
        f"JSON and {limits.PINNED_DEPTH} levels of nesting",
    ),
]
Label = Annotated[str, Meta(min_length=1, max_length=limits.LABEL_LENGTH, pattern=Text)]
Labels = Annotated[list[Label], Meta(max_length=limits.LABELS_COUNT)]
ModelName = Annotated[str, Meta(min_length=1, max_length=limits.MODEL_NAME_LENGTH, pattern=Text)]
RequiredModels = Annotated[list[ModelName], Meta(max_length=limits.REQUIRED_MODELS_COUNT)]
PoolBackends = Annotated[list[Identifier], Meta(max_length=limits.POOL_BACKENDS_COUNT)]
KeyFrontends = Annotated[list[Identifier], Meta(max_length=limits.KEY_FRONTENDS_COUNT)]
Strategy = Literal["RoundRobin", "Random", "LeastConnections", "ModelAware"]
StickyHeaderName = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=128,
        pattern=whole(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"),
        description="an HTTP request header name (stored lower-case)",
    ),
]
StickyHeaders = Annotated[list[StickyHeaderName], Meta(max_length=32)]
QueueSize = Annotated[
    int, Meta(ge=0, le=_INT32, description="requests that may wait per data plane; 0: no queue")
]
QueueMillis = Annotated[int, Meta(ge=0, le=3_600_000, description="milliseconds, at most one hour")]


class _Body(msgspec.Struct, kw_only=True, rename="pascal"):
    """PascalCase JSON, like OllamaFlow's System.Text.Json output."""


class FrontendIn(_Body, kw_only=True):
    """A frontend as written with PUT. The Identifier comes from the URL when replacing."""

    identifier: Identifier | None = None
    name: Name | None = None
    hostname: FrontendHost = "*"
    timeout_ms: Millis = 60000
    load_balancing: Strategy = "ModelAware"
    block_http10: bool = True
    max_request_body_size: BodySize = 536870912
    backends: PoolBackends = []
    required_models: RequiredModels = []
    log_request_full: bool = False
    log_request_body: bool = False
    log_response_body: bool = False
    use_sticky_sessions: bool = False
    sticky_session_expiration_ms: StickyMillis = 1800000
    pinned_embeddings_properties: Pinned = {}
    pinned_completions_properties: Pinned = {}
    allow_embeddings: bool = True
    allow_completions: bool = True
    allow_retries: bool = True
    active: bool = True
    # Beyond OllamaFlow: the first of these request headers present keys a sticky session.
    sticky_headers: StickyHeaders = msgspec.field(default_factory=lambda: list(DEFAULT_STICKY_HEADERS))
    queue_size: QueueSize = 128
    queue_timeout_ms: QueueMillis = 30000
    # Access, beyond OllamaFlow (where all of this is open): all off by default.
    allow_model_management: bool = False
    model_management_requires_key: bool = False
    pull_adds_required_models: bool = False
    allow_route_explain: bool = False
    require_api_keys: bool = False


class FrontendCreate(FrontendIn, kw_only=True):
    """A frontend as created with PUT to the collection: the Identifier is required."""

    identifier: Identifier


class FrontendOut(FrontendIn, kw_only=True):
    """A frontend as stored."""

    created_utc: datetime
    last_update_utc: datetime


class _BackendFields(_Body, kw_only=True):
    identifier: Identifier | None = None
    name: Name | None = None
    hostname: BackendHost = "localhost"
    port: Port = 8000
    ssl: bool = False
    unhealthy_threshold: Positive = 2
    healthy_threshold: Positive = 2
    health_check_method: Literal["GET", "HEAD"] = "GET"
    health_check_url: UrlPath = "/"
    health_check_interval_ms: ProbeMillis | None = None
    health_check_timeout_ms: ProbeMillis | None = None
    # 0: unlimited (OllamaFlow stored 4 and 10 without enforcing them; see the README's Limits section).
    max_parallel_requests: ParallelLimit = 0
    rate_limit_requests_threshold: RateLimit = 0
    log_request_full: bool = False
    log_request_body: bool = False
    log_response_body: bool = False
    api_format: Literal["Ollama", "OpenAI"] = "Ollama"
    labels: Labels = []
    pinned_embeddings_properties: Pinned = {}
    pinned_completions_properties: Pinned = {}
    allow_embeddings: bool = True
    allow_completions: bool = True
    active: bool = True


class BackendIn(_BackendFields, kw_only=True):
    """A backend as written with PUT.

    BearerToken, Headers values and Querystring values are secrets: write-only (reads show names only,
    each value as "<redacted>"). BearerToken omitted or "<redacted>" keeps the stored token (so a full
    replace from a UI that never saw it does not erase it); null or "" removes it. A Headers value or a
    Querystring parameter value "<redacted>" keeps the stored value of that header or parameter; the
    rest of Headers and Querystring replace the stored ones like any other field. Without a secrets key
    on the control plane (OLLAMAFLOW_SECRETS_KEY) new secret values are refused (400).
    """

    bearer_token: SecretToken | UnsetType | None = UNSET
    querystring: SecretQuerystring | None = None
    headers: SecretHeaders = {}


class BackendCreate(BackendIn, kw_only=True):
    """A backend as created with PUT to the collection: the Identifier is required."""

    identifier: Identifier


class BackendOut(_BackendFields, kw_only=True):
    """A backend as stored: secret values never shown (no BearerToken, Headers and Querystring values
    replaced by "<redacted>")."""

    querystring: RedactedQuerystring | None = None
    headers: RedactedHeaders = {}
    has_bearer_token: bool = False
    url_prefix: str = ""
    created_utc: datetime
    last_update_utc: datetime


KeyRate = Annotated[
    float,
    Meta(ge=0, le=1_000_000, description="requests per second, all data planes together; 0: unlimited"),
]


class ApiKeyIn(_Body, kw_only=True):
    """An API key's settings as written with PUT; the key itself is generated by the server."""

    identifier: Identifier | None = None
    name: Name | None = None
    frontends: KeyFrontends = []
    allow_model_management: bool = False
    rate_limit_requests_per_second: KeyRate = 0.0
    active: bool = True


class ApiKeyCreate(ApiKeyIn, kw_only=True):
    """An API key as created with PUT to the collection: the Identifier is required."""

    identifier: Identifier


class ApiKeyOut(ApiKeyIn, kw_only=True):
    """An API key as stored: never the key, only its first characters; usage over all data planes."""

    key_prefix: str
    requests_total: int = 0
    rate_limited_total: int = 0
    last_used_utc: datetime | None = None
    created_utc: datetime
    last_update_utc: datetime


class ApiKeyCreated(ApiKeyOut, kw_only=True):
    """The answer to a create: the only time the key itself is shown."""

    key: str


def _partial(source: type[msgspec.Struct], name: str, doc: str) -> type[msgspec.Struct]:
    """A struct with ``source``'s fields (but Identifier), each optional: absent means unchanged."""
    fields = [
        (f.name, Union[f.type, UnsetType], UNSET)  # noqa: UP007 - f.type is a runtime typing object
        for f in msgspec.structs.fields(source)
        if f.name != "identifier"
    ]
    cls = msgspec.defstruct(name, fields, kw_only=True, rename="pascal", module=__name__)
    cls.__doc__ = doc
    return cls


FrontendPatch = _partial(
    FrontendIn, "FrontendPatch", "A partial frontend for PATCH: only the given fields change."
)
BackendPatch = _partial(
    BackendIn, "BackendPatch", "A partial backend for PATCH: only the given fields change."
)
ApiKeyPatch = _partial(ApiKeyIn, "ApiKeyPatch", "A partial API key for PATCH: only the given fields change.")
