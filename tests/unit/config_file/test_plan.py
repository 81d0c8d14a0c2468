"""Plans as plain functions over plain data: creates, updates with their fields, deletes, the order
that frontends and backends need, and secrets compared by their shape."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from ollamaflow.config_file.errors import FileError
from ollamaflow.config_file.model import parse
from ollamaflow.config_file.plan import body, make_plan, missing_variables
from ollamaflow.config_file.secrets import references, resolve, shape

FILE = """\
backends:
  - {Identifier: gpu1, Hostname: 10.0.0.5, Port: 11434, BearerToken: '${GPU1_TOKEN}'}
  - {Identifier: gpu2, Hostname: 10.0.0.6, Port: 11434}
frontends:
  - {Identifier: main, Backends: [gpu1, gpu2], StickyHeaders: [X-Thread-Id, x-thread-id]}
"""


def _shown(kind: str, item: dict[str, Any]) -> dict[str, Any]:
    """What the admin API would show for a resource of the file (defaults filled, secrets redacted)."""
    from ollamaflow.config_file.model import BackendSpec, FrontendSpec

    if kind == "frontend":
        out = msgspec.to_builtins(msgspec.convert(item, FrontendSpec))
        out["StickyHeaders"] = list(dict.fromkeys(h.lower() for h in out["StickyHeaders"]))
        return out
    spec = msgspec.convert(item, BackendSpec)
    out = msgspec.to_builtins(spec)
    shown = shape(spec.bearer_token, spec.headers, spec.querystring)
    del out["BearerToken"]
    out.update(HasBearerToken=shown.has_bearer_token, Headers=shown.headers, Querystring=shown.querystring)
    return out


def _steps(plan) -> list[tuple[str, str, str]]:
    return [(a.op, a.kind, a.identifier) for a in plan.actions]


def test_empty_state_creates_backends_before_frontends() -> None:
    plan = make_plan(parse(FILE), [], [])
    assert _steps(plan) == [
        ("create", "backend", "gpu1"),
        ("create", "backend", "gpu2"),
        ("create", "frontend", "main"),
    ]
    # A create lists the fields the file gives (defaults left out), secrets by shape only.
    assert plan.actions[0].changes == {
        "Identifier": "gpu1",
        "Hostname": "10.0.0.5",
        "Port": 11434,
        "BearerToken": True,
    }


def test_matching_state_is_a_no_op() -> None:
    spec = parse(FILE)
    frontends = [
        _shown(
            "frontend", {"Identifier": "main", "Backends": ["gpu1", "gpu2"], "StickyHeaders": ["x-thread-id"]}
        )
    ]
    backends = [
        _shown(
            "backend", {"Identifier": "gpu1", "Hostname": "10.0.0.5", "Port": 11434, "BearerToken": "${X}"}
        ),
        _shown("backend", {"Identifier": "gpu2", "Hostname": "10.0.0.6", "Port": 11434}),
    ]
    plan = make_plan(spec, frontends, backends)
    assert plan.empty
    assert missing_variables(plan, spec, {}) == []
    # Resending rotates the token: an update of gpu1 only, which needs its variable.
    resend = make_plan(spec, frontends, backends, resend_secrets=True)
    assert _steps(resend) == [("update", "backend", "gpu1")] and resend.actions[0].resent == ("BearerToken",)
    assert missing_variables(resend, spec, {}) == ["GPU1_TOKEN"]
    assert body(resend.actions[0], spec, {"GPU1_TOKEN": "t"}) == {"BearerToken": "t"}


def test_updates_carry_only_changed_fields_and_prune_orders_deletes() -> None:
    spec = parse(FILE.replace("Port: 11434, Bearer", "Port: 11435, Bearer").replace("gpu1, gpu2", "gpu2"))
    frontends = [
        _shown("frontend", {"Identifier": "main", "Backends": ["gpu1", "gpu2"]}),
        _shown("frontend", {"Identifier": "old", "Hostname": "old.example", "Backends": ["gpu3"]}),
    ]
    backends = [
        _shown(
            "backend", {"Identifier": "gpu1", "Hostname": "10.0.0.5", "Port": 11434, "BearerToken": "${X}"}
        ),
        _shown("backend", {"Identifier": "gpu2", "Hostname": "10.0.0.6", "Port": 11434}),
        _shown("backend", {"Identifier": "gpu3", "Hostname": "10.0.0.7"}),
    ]
    plan = make_plan(spec, frontends, backends, prune=True)
    assert _steps(plan) == [
        ("update", "backend", "gpu1"),
        ("delete", "frontend", "old"),
        ("update", "frontend", "main"),
        ("delete", "backend", "gpu3"),
    ]
    gpu1, _, main, _ = plan.actions
    assert gpu1.changes == {"Port": (11434, 11435)}
    assert body(gpu1, spec, {}) == {"Port": 11435}  # the token's shape is unchanged: not sent
    assert main.changes["Backends"] == (["gpu1", "gpu2"], ["gpu2"])
    assert set(main.changes) == {"Backends", "StickyHeaders"}
    assert _steps(make_plan(spec, frontends, backends)) == _steps(plan)[:1] + _steps(plan)[2:3]


def test_secret_shape_changes_send_the_field_whole() -> None:
    spec = parse(
        "backends:\n  - Identifier: b\n    Headers: {X-Key: '${K}', X-New: '${N}'}\n"
        "    Querystring: 'api_key=${Q}'\n"
    )
    now = [
        _shown(
            "backend",
            {
                "Identifier": "b",
                "BearerToken": "${T}",
                "Headers": {"X-Key": "${K}"},
                "Querystring": "api_key=${Q}",
            },
        )
    ]
    plan = make_plan(spec, [], now)
    (action,) = plan.actions
    assert action.changes == {
        "BearerToken": (True, False),
        "Headers": ({"X-Key": "<redacted>"}, {"X-Key": "<redacted>", "X-New": "<redacted>"}),
    }
    assert missing_variables(plan, spec, {"N": "n"}) == ["K"]
    # The token, gone from the file, is cleared with null; the headers go whole, resolved.
    assert body(action, spec, {"K": "k", "N": "n"}) == {
        "BearerToken": None,
        "Headers": {"X-Key": "k", "X-New": "n"},
    }


def test_references_are_checked_before_anything_changes() -> None:
    spec = parse("frontends: [{Identifier: f, Backends: [elsewhere]}]")
    # Without --prune a backend on the control plane may be named; with it, only the file's.
    assert _steps(make_plan(spec, [], [_shown("backend", {"Identifier": "elsewhere"})])) == [
        ("create", "frontend", "f")
    ]
    with pytest.raises(FileError, match=r"frontends\[0\].Backends: no backend 'elsewhere' in the file$"):
        make_plan(spec, [], [_shown("backend", {"Identifier": "elsewhere"})], prune=True)
    with pytest.raises(FileError, match="in the file or on the control plane"):
        make_plan(spec, [], [])


def test_a_kept_frontend_holding_the_hostname_is_an_error_unless_pruned() -> None:
    spec = parse("frontends: [{Identifier: new, Hostname: '*'}]")
    now = [_shown("frontend", {"Identifier": "old", "Hostname": "*"})]
    with pytest.raises(FileError, match="frontend 'old' on the control plane"):
        make_plan(spec, now, [])
    assert _steps(make_plan(spec, now, [], prune=True)) == [
        ("delete", "frontend", "old"),
        ("create", "frontend", "new"),
    ]


def test_secret_references_resolve_and_bad_values_are_refused() -> None:
    headers = {"X-Key": "${K}", "X-Empty": ""}
    assert references("${T}", headers, "a=${Q}&b=&${F}&c=${T}") == ["T", "K", "Q", "F"]
    values = resolve("${T}", headers, "a=${Q}&b=&${F}", {"T": "t", "K": "k", "Q": "q", "F": "f"})
    assert values == ("t", {"X-Key": "k", "X-Empty": ""}, "a=q&b=&f")
    with pytest.raises(FileError, match="environment variable K: holds a line break"):
        resolve(None, headers, None, {"K": "a\nb"})
    with pytest.raises(FileError, match="environment variable Q: a Querystring value may not hold"):
        resolve(None, {}, "a=${Q}", {"Q": "x&y=z"})


def test_rendering_never_shows_more_than_the_shape() -> None:
    import io
    import json

    from rich.console import Console

    from ollamaflow.config_file.render import plan_json, print_plan

    spec = parse(FILE)
    now = [
        _shown("backend", {"Identifier": "gpu1", "Hostname": "10.0.0.5", "Port": 1, "BearerToken": "${X}"})
    ]
    plan = make_plan(spec, [], now, prune=True)
    out = io.StringIO()
    print_plan(Console(file=out, soft_wrap=True), plan, source="c.yaml", target="http://cp", dry_run=True)
    text = out.getvalue()
    assert "~ update backend gpu1  Port: 1 → 11434" in text
    assert "+ create backend gpu2  Hostname=10.0.0.6; Port=11434" in text
    assert "2 create, 1 update, 0 delete. Nothing was changed (--dry-run)." in text
    report = json.loads(plan_json(plan, source="c.yaml", target="http://cp", dry_run=True, applied=0))
    assert report["summary"] == {"create": 2, "update": 1, "delete": 0} and report["changed"] is False
    assert report["actions"][1] == {
        "op": "update",
        "kind": "backend",
        "identifier": "gpu1",
        "fields": {"Port": {"from": 1, "to": 11434}},
    }
    out = io.StringIO()
    print_plan(Console(file=out), make_plan(spec, [], []), source="c.yaml", target="http://cp", dry_run=False)
    assert "BearerToken=set" in out.getvalue()


def test_api_keys_only_when_the_file_lists_them() -> None:
    keys_now = [{"Identifier": "old", "Frontends": ["main"], "KeyPrefix": "ofk_1"}]
    frontends = [_shown("frontend", {"Identifier": "main"})]
    # No apikeys list: keys are left alone, even with --prune.
    assert (
        _steps(make_plan(parse("frontends: [{Identifier: main}]"), frontends, [], keys_now, prune=True)) == []
    )
    spec = parse(
        "frontends: [{Identifier: main}, {Identifier: new, Hostname: new.example}]\n"
        "apikeys: [{Identifier: team, Frontends: [new], RateLimitRequestsPerSecond: 5}]\n"
    )
    plan = make_plan(spec, frontends, [], keys_now, prune=True)
    # A key goes first, and is created only after the frontend it names.
    assert _steps(plan) == [
        ("delete", "apikey", "old"),
        ("create", "frontend", "new"),
        ("create", "apikey", "team"),
    ]
    assert body(plan.actions[2], spec, {})["RateLimitRequestsPerSecond"] == 5.0
    with pytest.raises(FileError, match=r"apikeys\[0\].Frontends: no frontend 'gone' in the file or on"):
        make_plan(parse("apikeys: [{Identifier: k, Frontends: [gone]}]"), [], [], [])
    # Updates carry the changed settings only.
    now = [{"Identifier": "team", "Frontends": ["new"], "RateLimitRequestsPerSecond": 1.0, "Active": True}]
    (update,) = make_plan(
        spec, [*frontends, _shown("frontend", {"Identifier": "new", "Hostname": "new.example"})], [], now
    ).actions
    assert (update.op, update.changes) == ("update", {"RateLimitRequestsPerSecond": (1.0, 5.0)})


def test_secret_values_within_the_apis_lengths() -> None:
    with pytest.raises(FileError, match="environment variable T: a BearerToken may be at most 4096"):
        resolve("${T}", {}, None, {"T": "x" * 4097})
    with pytest.raises(FileError, match="environment variable K: a header value may be at most 4096"):
        resolve(None, {"X-K": "${K}"}, None, {"K": "x" * 4097})
    with pytest.raises(FileError, match="the Querystring, its variables' values put in, is 2052 characters"):
        resolve(None, {}, "a=${Q}", {"Q": "x" * 2050})
