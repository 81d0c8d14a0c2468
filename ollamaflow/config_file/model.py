"""The cluster file (``ollamaflow apply -f cluster.yaml``): its types, its parsing and its checks.

The file holds ``frontends`` and ``backends`` (and, optionally, ``apikeys``), each a list of
resources with the admin API's PascalCase fields. A field left out takes the API's default, as a
``PUT`` would: the file describes each resource whole. The defaults here mirror
``controlplane.admin.schemas`` (a test holds them equal); the CLI cannot import that module, since a
data-plane-only install lacks the control plane's web framework.

A backend's secrets (``BearerToken``, ``Headers`` values, ``Querystring`` values) are never literal:
each is an environment reference, ``${NAME}`` (``ollamaflow.config_file.secrets``).

Pure: text in, validated values or a ``FileError`` naming the place (``backends[2].Port``) out.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

import msgspec
import yaml
from msgspec import Meta

from ollamaflow.config_file.errors import FileError
from ollamaflow.config_file.secrets import NO_SPACE, check_secrets
from shared.snapshot import DEFAULT_STICKY_HEADERS

__all__ = [
    "MAX_APIKEYS",
    "MAX_BACKENDS",
    "MAX_FILE_BYTES",
    "MAX_FRONTENDS",
    "ApiKeySpec",
    "BackendSpec",
    "ClusterSpec",
    "FileError",
    "FrontendSpec",
    "load_yaml",
    "parse",
    "parse_data",
]

# Bounds on what is read: the API's default caps on the number of resources, and a file size that
# holds that many comfortably (a backend takes some hundred bytes of YAML).
MAX_FRONTENDS = 5_000
MAX_BACKENDS = 20_000
MAX_APIKEYS = 50_000
MAX_FILE_BYTES = 16 * 1024 * 1024
_INT32 = 2**31 - 1
PINNED_JSON_BYTES = 8192
PINNED_DEPTH = 32  # as the admin API allows


Identifier = Annotated[str, Meta(min_length=1, max_length=128, pattern=rf"^[^{NO_SPACE}/?#]+$")]
_TEXT = r"^[^\x00]*$"  # free text: anything but NUL, which PostgreSQL cannot store
Name = Annotated[str, Meta(max_length=256, pattern=_TEXT)]
Host = Annotated[str, Meta(min_length=1, max_length=253)]
Port = Annotated[int, Meta(ge=1, le=65535)]
Positive = Annotated[int, Meta(ge=1, le=_INT32)]
Millis = Annotated[int, Meta(ge=0, le=_INT32)]
ProbeMillis = Annotated[int, Meta(ge=100, le=86_400_000)]
Pinned = Annotated[dict[str, Any], Meta(max_length=64)]
Short = Annotated[str, Meta(min_length=1, max_length=128, pattern=_TEXT)]
Model = Annotated[str, Meta(min_length=1, max_length=256, pattern=_TEXT)]
HeaderName = Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")]


class _Resource(msgspec.Struct, kw_only=True, rename="pascal", forbid_unknown_fields=True):
    """PascalCase like the admin API; an unknown field is an error (a typo would otherwise be lost)."""


class FrontendSpec(_Resource, kw_only=True):
    identifier: Identifier
    name: Name | None = None
    hostname: Host = "*"
    timeout_ms: Millis = 60000
    load_balancing: Literal["RoundRobin", "Random", "LeastConnections", "ModelAware"] = "ModelAware"
    block_http10: bool = True
    max_request_body_size: Annotated[int, Meta(ge=1, le=2**62)] = 536870912
    backends: Annotated[list[Identifier], Meta(max_length=20_000)] = []
    required_models: Annotated[list[Model], Meta(max_length=256)] = []
    log_request_full: bool = False
    log_request_body: bool = False
    log_response_body: bool = False
    use_sticky_sessions: bool = False
    sticky_session_expiration_ms: Annotated[int, Meta(ge=10000, le=86400000)] = 1800000
    pinned_embeddings_properties: Pinned = {}
    pinned_completions_properties: Pinned = {}
    allow_embeddings: bool = True
    allow_completions: bool = True
    allow_retries: bool = True
    active: bool = True
    sticky_headers: Annotated[list[HeaderName], Meta(max_length=32)] = msgspec.field(
        default_factory=lambda: list(DEFAULT_STICKY_HEADERS)
    )
    queue_size: Annotated[int, Meta(ge=0, le=_INT32)] = 128
    queue_timeout_ms: Annotated[int, Meta(ge=0, le=3_600_000)] = 30000
    allow_model_management: bool = False
    model_management_requires_key: bool = False
    pull_adds_required_models: bool = False
    allow_route_explain: bool = False
    require_api_keys: bool = False


class BackendSpec(_Resource, kw_only=True):
    identifier: Identifier
    name: Name | None = None
    hostname: Host = "localhost"
    port: Port = 8000
    ssl: bool = False
    unhealthy_threshold: Positive = 2
    healthy_threshold: Positive = 2
    health_check_method: Literal["GET", "HEAD"] = "GET"
    health_check_url: Annotated[str, Meta(max_length=2048, pattern=rf"^/[^{NO_SPACE}]*$")] = "/"
    health_check_interval_ms: ProbeMillis | None = None
    health_check_timeout_ms: ProbeMillis | None = None
    # 0: unlimited (the default; OllamaFlow's 4 and 10 were never enforced).
    max_parallel_requests: Annotated[int, Meta(ge=0, le=_INT32)] = 0
    rate_limit_requests_threshold: Annotated[int, Meta(ge=0, le=_INT32)] = 0
    log_request_full: bool = False
    log_request_body: bool = False
    log_response_body: bool = False
    api_format: Literal["Ollama", "OpenAI"] = "Ollama"
    labels: Annotated[list[Short], Meta(max_length=64)] = []
    pinned_embeddings_properties: Pinned = {}
    pinned_completions_properties: Pinned = {}
    allow_embeddings: bool = True
    allow_completions: bool = True
    active: bool = True
    # Secrets: environment references only (checked after decoding, ``check_secrets``).
    bearer_token: Annotated[str, Meta(max_length=4096)] | None = None
    headers: Annotated[dict[HeaderName, Annotated[str, Meta(max_length=4096)]], Meta(max_length=32)] = {}
    querystring: Annotated[str, Meta(max_length=2048, pattern=rf"^[^{NO_SPACE}#]*$")] | None = None


class ApiKeySpec(_Resource, kw_only=True):
    """An API key's settings; the key itself is generated by the control plane when it is created."""

    identifier: Identifier
    name: Name | None = None
    frontends: Annotated[list[Identifier], Meta(max_length=5_000)] = []
    allow_model_management: bool = False
    rate_limit_requests_per_second: Annotated[float, Meta(ge=0, le=1_000_000)] = 0.0
    active: bool = True


class ClusterSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The whole file. ``version`` is there so that a later format can be told apart. ``apikeys``
    left out (None) means the file does not manage API keys at all (not even with --prune)."""

    version: Literal[1] = 1
    frontends: Annotated[list[FrontendSpec], Meta(max_length=MAX_FRONTENDS)] = []
    backends: Annotated[list[BackendSpec], Meta(max_length=MAX_BACKENDS)] = []
    apikeys: Annotated[list[ApiKeySpec], Meta(max_length=MAX_APIKEYS)] | None = None


# libyaml's parser where the wheel has it (the file may hold thousands of resources), else PyYAML's own.
_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_SafeLoader):
    """Safe loading without aliases (``*a``: a few lines could expand into an exponential tree) and
    without repeated keys (YAML keeps the last one silently, hiding a mistake)."""

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        # The composer hands an alias over as the very node its anchor named: one seen twice is one.
        if node in self.constructed_objects or node in self.recursive_objects:
            raise FileError(
                f"line {node.start_mark.line + 1}: a YAML alias (*name) repeats what starts here; "
                "aliases are not accepted"
            )
        return super().construct_object(node, deep=deep)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise FileError(
                        f"line {key_node.start_mark.line + 1}: key '{key_node.value}' is given twice"
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str | bytes, *, source: str = "the file") -> Any:
    """The YAML document in ``text`` as plain data (bounded, safe, one document)."""
    if len(text) > MAX_FILE_BYTES:
        raise FileError(f"{source} is {len(text)} bytes, more than the limit of {MAX_FILE_BYTES}")
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except FileError:
        raise
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise FileError(f"{source}: {where}not valid YAML ({problem})") from None
    except RecursionError:
        raise FileError(f"{source}: nested too deeply") from None


_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)


def parse_data(data: Any) -> ClusterSpec:
    """Validate plain data (a loaded YAML or JSON document) as a cluster file."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise FileError("the file must hold a mapping with 'backends', 'frontends' (and 'apikeys') lists")
    try:
        spec = msgspec.convert(data, ClusterSpec, strict=True)
    except msgspec.ValidationError as exc:
        raise FileError(_where(str(exc))) from None
    except RecursionError:
        raise FileError("the file is nested too deeply") from None
    _check_whole(spec)
    return spec


def parse(text: str | bytes, *, source: str = "the file") -> ClusterSpec:
    return parse_data(load_yaml(text, source=source))


def _where(message: str) -> str:
    """msgspec's "Expected `int`, got `str` - at `$.backends[2].Port`" as "backends[2].Port: Expected…"."""
    match = _AT.match(message)
    if not match or not match.group("path"):
        return message
    return f"{match.group('path').lstrip('.')}: {match.group('msg')}"


def _check_whole(spec: ClusterSpec) -> None:
    """What the types cannot say: unique identifiers, unique frontend hostnames, secrets as references."""
    for kind, items in (
        ("frontends", spec.frontends),
        ("backends", spec.backends),
        ("apikeys", spec.apikeys or []),
    ):
        seen: dict[str, int] = {}
        for index, item in enumerate(items):
            if item.identifier in seen:
                raise FileError(
                    f"{kind}[{index}].Identifier: '{item.identifier}' is also {kind}[{seen[item.identifier]}]"
                )
            seen[item.identifier] = index
    for kind, items, star in (("frontends", spec.frontends, True), ("backends", spec.backends, False)):
        for index, item in enumerate(items):
            if not _is_host(item.hostname, star=star):
                raise FileError(
                    f"{kind}[{index}].Hostname: '{item.hostname}' is not a host name (letters, digits, '-' "
                    "and '_' in dot-separated labels of at most 63) or an IP address (IPv6 without brackets)"
                    + (", nor '*'" if star else "")
                )
    hosts: dict[str, int] = {}
    for index, frontend in enumerate(spec.frontends):
        key = frontend.hostname.lower()
        if key in hosts:
            raise FileError(
                f"frontends[{index}].Hostname: '{frontend.hostname}' is also the Hostname of "
                f"frontends[{hosts[key]}] (Hostnames are unique among frontends, ignoring case)"
            )
        hosts[key] = index
    for kind, items in (("frontends", spec.frontends), ("backends", spec.backends)):
        for index, item in enumerate(items):
            for field, value in (
                ("PinnedEmbeddingsProperties", item.pinned_embeddings_properties),
                ("PinnedCompletionsProperties", item.pinned_completions_properties),
            ):
                _check_pinned(f"{kind}[{index}].{field}", value)
    for index, backend in enumerate(spec.backends):
        check_secrets(f"backends[{index}]", backend.bearer_token, backend.headers, backend.querystring)


def _check_pinned(where: str, value: dict[str, Any]) -> None:
    """The API's limits on pinned properties, which their type cannot carry: size as compact JSON,
    depth of nesting (the object itself counts), no NUL in any string."""
    size = len(msgspec.json.encode(value))
    if size > PINNED_JSON_BYTES:
        raise FileError(f"{where}: {size} bytes as JSON, more than the limit of {PINNED_JSON_BYTES}")
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > PINNED_DEPTH:
            raise FileError(f"{where}: nested more than {PINNED_DEPTH} deep")
        children = list(item.values()) if isinstance(item, dict) else item
        strings = [*item, *children] if isinstance(item, dict) else children
        if any(isinstance(text, str) and "\x00" in text for text in strings):
            raise FileError(f"{where}: a string holds a NUL character")
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))


_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_DNS_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


def _is_host(value: str, *, star: bool) -> bool:
    """A host name (dotted IPv4 is one too) or an IPv6 address without brackets, zone or embedded
    IPv4, as the admin API takes them; a frontend's may also be '*'."""
    if star and value == "*":
        return True
    if _DNS_NAME.fullmatch(value):
        return True
    if ":" not in value or "." in value or "%" in value:
        return False
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return False
    return True
