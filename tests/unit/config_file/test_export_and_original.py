"""Export (the API's lists as a cluster file) and OllamaFlow's rows converted, both pure: what they
write parses, and applied to the state it came from plans nothing."""

from __future__ import annotations

import pytest

from ollamaflow.config_file.errors import FileError
from ollamaflow.config_file.export import Variables, cluster_document, to_document
from ollamaflow.config_file.model import parse, parse_data
from ollamaflow.config_file.original import Source, convert
from ollamaflow.config_file.plan import make_plan

BACKENDS = [
    {
        "Identifier": "gpu-1",
        "Hostname": "10.0.0.5",
        "Port": 11434,
        "HasBearerToken": True,
        "Headers": {"X-Api-Key": "<redacted>", "X-Empty": ""},
        "Querystring": "api-version=<redacted>&debug=&<redacted>",
        "Labels": ["eu"],
        "CreatedUtc": "2030-01-01T00:00:00Z",
        "UrlPrefix": "http://10.0.0.5:11434",
    },
    {"Identifier": "gpu_1", "Hostname": "10.0.0.6", "Port": 8000, "HasBearerToken": True, "Headers": {}},
]
FRONTENDS = [{"Identifier": "main", "Hostname": "*", "Backends": ["gpu-1", "gpu_1"], "QueueSize": 0}]


def test_export_writes_references_and_applies_as_a_no_op() -> None:
    document, variables = to_document(FRONTENDS, BACKENDS)
    assert document["backends"][0] == {
        "Identifier": "gpu-1",
        "Hostname": "10.0.0.5",
        "Port": 11434,
        "Labels": ["eu"],
        "BearerToken": "${GPU_1_BEARER_TOKEN}",
        "Headers": {"X-Api-Key": "${GPU_1_HEADER_X_API_KEY}", "X-Empty": ""},
        "Querystring": "api-version=${GPU_1_QUERY_API_VERSION}&debug=&${GPU_1_QUERY_3}",
    }
    # Two ids with the same slug get distinct variables.
    assert document["backends"][1]["BearerToken"] == "${GPU_1_BEARER_TOKEN_2}"
    assert document["frontends"] == [{"Identifier": "main", "Backends": ["gpu-1", "gpu_1"], "QueueSize": 0}]
    assert len(variables) == 5
    text = cluster_document(FRONTENDS, BACKENDS)
    assert "#   GPU_1_QUERY_3" in text
    assert make_plan(parse(text), FRONTENDS, BACKENDS).empty


def test_variable_names_are_valid() -> None:
    variables = Variables()
    assert variables.new("1st", "BEARER_TOKEN") == "B1ST_BEARER_TOKEN"
    assert variables.new("ü", "HEADER", "x") == "X_HEADER_X"


def _backend_row(**over):
    row = {
        "Identifier": "backend1",
        "Name": "",
        "Hostname": "localhost",
        "Port": 11434,
        "Ssl": False,
        "ApiFormat": "Ollama",
        "Labels": [],
        "Headers": {},
        "BearerToken": None,
        "Querystring": None,
        "HealthCheckMethod": "GET",
    }
    row.update(over)
    return row


def test_convert_keeps_secrets_beside_the_document() -> None:
    source = Source(
        settings={"stickyheaders": ["X-Session"], "logging": {}},
        backends=[_backend_row(BearerToken="tok", Querystring="token=q1&flag", Headers={"X-Key": "h"})],
        frontends=[{"Identifier": "frontend1", "Hostname": "*", "Backends": ["backend1", "gone"]}],
    )
    converted = convert(source)
    (backend,) = converted.document["backends"]
    assert backend["BearerToken"] == "${BACKEND1_BEARER_TOKEN}"
    assert backend["Querystring"] == "token=${BACKEND1_QUERY_TOKEN}&${BACKEND1_QUERY_2}"
    assert converted.secrets == {
        "BACKEND1_BEARER_TOKEN": "tok",
        "BACKEND1_HEADER_X_KEY": "h",
        "BACKEND1_QUERY_TOKEN": "q1",
        "BACKEND1_QUERY_2": "flag",
    }
    (frontend,) = converted.document["frontends"]
    assert frontend["Backends"] == ["backend1"] and frontend["LoadBalancing"] == "RoundRobin"
    assert frontend["StickyHeaders"] == ["X-Session"]
    notes = " | ".join(converted.notes)
    assert "'gone'" in notes and "Logging: no equivalent" in notes and "StickyHeaders" in notes
    assert parse_data(converted.document) == converted.spec


def test_convert_notes_unknown_api_format_and_names_a_bad_row() -> None:
    converted = convert(Source(backends=[_backend_row(ApiFormat="Unknown")]))
    assert any("ApiFormat 'Unknown' has no equivalent" in note for note in converted.notes)
    with pytest.raises(FileError, match=r"backends\[0\].Port: .* \(backend 'backend1'\)"):
        convert(Source(backends=[_backend_row(Port=0)]))
