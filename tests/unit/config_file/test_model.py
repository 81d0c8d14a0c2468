"""The cluster file's parsing and checks: every error names its place; secrets are references only."""

from __future__ import annotations

import msgspec
import pytest

from controlplane.admin.schemas import ApiKeyIn, BackendIn, FrontendIn
from ollamaflow.config_file.errors import FileError
from ollamaflow.config_file.model import (
    MAX_FILE_BYTES,
    PINNED_DEPTH,
    ApiKeySpec,
    BackendSpec,
    FrontendSpec,
    parse,
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "backends: [{Identifier: a}, {Identifier: b, Port: x}]",
            "backends[1].Port: Expected `int`, got `str`",
        ),
        ("backends: [{Identifier: a, Port: 0}]", "backends[0].Port: Expected `int` >= 1"),
        ("backends: [{Identifier: a, Prot: 1}]", "backends[0]: Object contains unknown field `Prot`"),
        ("frontends: [{Name: x}]", "frontends[0]: Object missing required field `Identifier`"),
        ("frontends: [{Identifier: a, LoadBalancing: Fastest}]", "frontends[0].LoadBalancing: Invalid enum"),
        ("backends: [{Identifier: 'a b'}]", "backends[0].Identifier"),
        ("backends: [{Identifier: a}, {Identifier: a}]", "backends[1].Identifier: 'a' is also backends[0]"),
        (
            "apikeys: [{Identifier: k, RateLimitRequestsPerSecond: -1}]",
            "apikeys[0].RateLimitRequestsPerSecond",
        ),
        ("apikeys: [{Identifier: k, Key: ofk_x}]", "apikeys[0]: Object contains unknown field `Key`"),
        (
            "frontends: [{Identifier: a, Hostname: Api.Example}, {Identifier: b, Hostname: api.example}]",
            "frontends[1].Hostname: 'api.example' is also the Hostname of frontends[0]",
        ),
        ("backend: []", "Object contains unknown field `backend`"),
        ("version: 2", "version: Invalid enum value 2"),
        ("- 1", "the file must hold a mapping"),
        ("a: &x [1]\nb: *x", "line 1: a YAML alias (*name) repeats what starts here"),
        ("a: [&x 1, *x]", "aliases are not accepted"),
        ("&a [*a]", "aliases are not accepted"),
        ("[" * 100_000, "not valid YAML"),
        ("backends: []\nbackends: []", "line 2: key 'backends' is given twice"),
        ("backends: [", "not valid YAML"),
        ("backends: [{Identifier: a, Port: '1'}]", "backends[0].Port: Expected `int`, got `str`"),
        (
            "frontends: [{Identifier: a, PinnedCompletionsProperties: "
            + "{a: " * (PINNED_DEPTH + 1)
            + "1"
            + "}" * (PINNED_DEPTH + 1)
            + "}]",
            f"frontends[0].PinnedCompletionsProperties: nested more than {PINNED_DEPTH} deep",
        ),
        (
            'frontends: [{Identifier: a, PinnedEmbeddingsProperties: {k: [1, {"a\\0": 2}]}}]',
            "frontends[0].PinnedEmbeddingsProperties: a string holds a NUL character",
        ),
        (
            "backends: [{Identifier: a, PinnedEmbeddingsProperties: {k: '" + "x" * 9000 + "'}}]",
            "backends[0].PinnedEmbeddingsProperties: 9008 bytes as JSON, more than the limit of 8192",
        ),
    ],
)
def test_errors_name_the_place(text: str, message: str) -> None:
    with pytest.raises(FileError) as caught:
        parse(text)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("backend", "message"),
    [
        ("BearerToken: sk-123", "backends[0].BearerToken: a secret must be an environment reference"),
        ("BearerToken: 'Bearer ${X}'", "backends[0].BearerToken"),
        ("Headers: {X-Key: abc}", "backends[0].Headers.X-Key: a header value is secret"),
        ("Headers: {X-Key: '${A}', x-key: '${B}'}", "backends[0].Headers.x-key: also given as 'X-Key'"),
        ("Querystring: 'api_key=abc'", "backends[0].Querystring: the value of 'api_key' is secret"),
        ("Querystring: 'flag'", "backends[0].Querystring: parameter 1 ('flag') has no '='"),
        ("Querystring: 'a=${A}&=${B}'", "backends[0].Querystring: parameter 2 has no name"),
        ("BearerToken: '${1X}'", "backends[0].BearerToken"),
    ],
)
def test_secrets_must_be_references(backend: str, message: str) -> None:
    with pytest.raises(FileError) as caught:
        parse("backends:\n  - Identifier: b\n    " + backend + "\n")
    assert message in str(caught.value)


def test_references_and_empty_values_pass() -> None:
    spec = parse(
        "backends:\n  - Identifier: b\n    BearerToken: ${B_TOKEN}\n"
        "    Headers: {X-Key: '${B_KEY}', X-Empty: ''}\n    Querystring: 'v=${V}&empty=&${FLAG}'\n"
    )
    (backend,) = spec.backends
    assert backend.bearer_token == "${B_TOKEN}" and backend.headers["X-Empty"] == ""


def test_an_empty_file_is_an_empty_cluster() -> None:
    spec = parse("")
    assert spec.frontends == [] and spec.backends == []


def test_size_is_bounded() -> None:
    with pytest.raises(FileError, match="more than the limit"):
        parse(b"#" * (MAX_FILE_BYTES + 1))


@pytest.mark.parametrize(
    ("mine", "theirs"), [(FrontendSpec, FrontendIn), (BackendSpec, BackendIn), (ApiKeySpec, ApiKeyIn)]
)
def test_fields_and_defaults_are_the_apis(mine: type[msgspec.Struct], theirs: type[msgspec.Struct]) -> None:
    """The file's defaults must be the API's, or an omitted field would read as a change."""
    ours = {f.encode_name: f for f in msgspec.structs.fields(mine)}
    api = {f.encode_name: f for f in msgspec.structs.fields(theirs)}
    assert set(ours) == set(api)
    for name, field in api.items():
        if name in ("Identifier", "BearerToken"):
            continue
        default = field.default_factory() if field.default_factory is not msgspec.NODEFAULT else field.default
        own = ours[name]
        own_default = own.default_factory() if own.default_factory is not msgspec.NODEFAULT else own.default
        assert own_default == default, name


def test_the_readme_sample_parses(repo_root) -> None:
    from ollamaflow.config_file.plan import make_plan, missing_variables

    readme = (repo_root / "README.md").read_text()
    section = readme.split("## Configuration as code", 1)[1]
    sample = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    spec = parse(sample)
    plan = make_plan(spec, [], [])
    assert [(a.op, a.kind) for a in plan.actions] == [
        ("create", "backend"),
        ("create", "backend"),
        ("create", "frontend"),
        ("create", "apikey"),
    ]
    assert missing_variables(plan, spec, {}) == ["AZURE_TOKEN", "AZURE_KEY", "AZURE_API_VERSION"]


@pytest.mark.parametrize(
    "host",
    [
        "gpu1",
        "10.0.0.5",
        "a.b-c.d_e",
        "::1",
        "fe80::1",
        "2001:db8::8a2e:370:7334",
        "1:2:3:4:5:6:7:8",
        "-bad",
        "bad-",
        "a..b",
        "a.",
        "http://x",
        "host:22",
        "::ffff:1.2.3.4",
        "fe80::1%eth0",
        "[::1]",
        "*",
        "x" * 64,
        "a b",
        "1:2:3:4:5:6:7:8:9",
        ":::",
    ],
)
def test_hostnames_as_the_api_takes_them(host: str) -> None:
    """The file refuses exactly the Hostnames the admin API refuses (its patterns are the reference)."""
    import re

    from controlplane.admin.limits import BACKEND_HOST_PATTERN, FRONTEND_HOST_PATTERN

    for kind, pattern in (("backends", BACKEND_HOST_PATTERN), ("frontends", FRONTEND_HOST_PATTERN)):
        api_takes = re.search(pattern, host) is not None
        text = f"{kind}: [{{Identifier: a, Hostname: '{host}'}}]"
        if api_takes:
            parse(text)
        else:
            with pytest.raises(FileError, match=rf"{kind}\[0\].Hostname"):
                parse(text)


def test_the_no_space_class_is_the_apis() -> None:
    from controlplane.admin.limits import NO_SPACE as API_NO_SPACE
    from ollamaflow.config_file.secrets import NO_SPACE

    assert NO_SPACE == API_NO_SPACE
