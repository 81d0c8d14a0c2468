"""Embeddings (float, base64, normalization), model lists and error bodies, read by the official clients."""

from __future__ import annotations

import array
import base64
import json
import math
import sys

import httpx
import ollama
import openai
import pytest

from dataplane.translate.embeddings import (
    decode_base64_vector,
    encode_base64_vector,
    ollama_embed_reply,
    ollama_embeddings_reply,
    openai_embeddings_reply,
)
from dataplane.translate.errors import (
    Untranslatable,
    ollama_error_from_openai,
    openai_error_from_ollama,
    unsupported_operation,
)
from dataplane.translate.models import (
    ollama_ps_body,
    ollama_pull_reply,
    ollama_show_body,
    ollama_tags_body,
    ollama_tags_entries,
    openai_model_body,
    openai_models_body,
    openai_models_entries,
)
from dataplane.translate.openai_on_ollama import embeddings_request
from tests.dataplane.translate.transcripts import NOW_NS, STARTED_NS

OPENAI_EMBEDDINGS = json.dumps(
    {
        "object": "list",
        "model": "bge",
        "data": [
            {"object": "embedding", "index": 1, "embedding": [0.0, 3.0, 4.0]},
            {"object": "embedding", "index": 0, "embedding": encode_base64_vector([1.0, 0.0, 0.0])},
        ],
        "usage": {"prompt_tokens": 6, "total_tokens": 6},
    }
).encode()
NATIVE_EMBED = json.dumps(
    {"model": "minilm", "embeddings": [[0.6, 0.8], [1.0, -0.5]], "total_duration": 5, "prompt_eval_count": 4}
).encode()


def reply_with(body: bytes, status: int = 200) -> httpx.MockTransport:
    return httpx.MockTransport(
        lambda request: httpx.Response(status, content=body, headers={"Content-Type": "application/json"})
    )


def test_base64_vectors_are_little_endian_float32() -> None:
    vector = [0.5, -1.25, 3.0]
    expected = array.array("f", vector)
    if sys.byteorder == "big":
        expected.byteswap()
    assert base64.b64decode(encode_base64_vector(vector)) == expected.tobytes()
    assert decode_base64_vector(encode_base64_vector(vector)) == vector


def test_openai_embeddings_to_api_embed_sorted_and_normalized() -> None:
    out = ollama_embed_reply(OPENAI_EMBEDDINGS, model="bge:latest", started_ns=STARTED_NS, now_ns=NOW_NS)
    reply = ollama.EmbedResponse.model_validate_json(out)
    assert (
        reply.model == "bge:latest" and reply.prompt_eval_count == 6 and reply.total_duration == 1_500_000_000
    )
    assert [list(vector) for vector in reply.embeddings] == [[1.0, 0.0, 0.0], [0.0, 0.6, 0.8]]
    client = ollama.Client(host="http://127.0.0.1:9", transport=reply_with(out))
    assert client.embed(model="bge:latest", input=["a", "b"]).embeddings[1] == [0.0, 0.6, 0.8]


def test_openai_embeddings_to_legacy_api_embeddings_unnormalized() -> None:
    body = json.dumps({"data": [{"index": 0, "embedding": [0.0, 3.0, 4.0]}]}).encode()
    out = ollama_embeddings_reply(body)
    assert json.loads(out) == {"embedding": [0.0, 3.0, 4.0]}
    ollama.EmbeddingsResponse.model_validate_json(out)


@pytest.mark.parametrize("encoding_format", ["float", None])
def test_native_embed_to_openai_client(encoding_format: str | None) -> None:
    """The client's own request is translated; by default openai-python asks for base64 and decodes it."""
    sent = []

    def backend(request: httpx.Request) -> httpx.Response:
        call = embeddings_request(request.content)
        sent.append(call)
        body = openai_embeddings_reply(NATIVE_EMBED, model=call.model, as_base64=call.base64)
        return httpx.Response(200, content=body, headers={"Content-Type": "application/json"})

    client = openai.OpenAI(
        api_key="x",
        base_url="http://127.0.0.1:9/v1",
        max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(backend)),
    )
    options = {"encoding_format": encoding_format} if encoding_format else {}
    reply = client.embeddings.create(model="minilm", input=["a", "b"], **options)
    assert sent[0].base64 is (encoding_format is None)
    assert [[round(v, 6) for v in item.embedding] for item in reply.data] == [[0.6, 0.8], [1.0, -0.5]]
    assert [item.index for item in reply.data] == [0, 1]
    assert (reply.usage.prompt_tokens, reply.usage.total_tokens, reply.model) == (4, 4, "minilm")


def test_unit_vectors_stay_unit() -> None:
    body = json.dumps({"data": [{"index": 0, "embedding": [1.0, 2.0, 2.0, 4.0]}]}).encode()
    vector = json.loads(ollama_embed_reply(body, model="m", started_ns=0, now_ns=1))["embeddings"][0]
    assert math.isclose(math.fsum(v * v for v in vector), 1.0)
    assert json.loads(
        ollama_embed_reply(
            json.dumps({"data": [{"index": 0, "embedding": [0.0, 0.0]}]}).encode(),
            model="m",
            started_ns=0,
            now_ns=1,
        )
    )["embeddings"] == [[0.0, 0.0]]


def test_openai_models_to_ollama_tags() -> None:
    body = json.dumps(
        {
            "object": "list",
            "data": [
                {
                    "id": "Qwen/Qwen3-8B",
                    "object": "model",
                    "created": 1746093600,
                    "owned_by": "vllm",
                    "max_model_len": 4096,
                },
            ],
        }
    ).encode()
    entries = ollama_tags_entries(body, backend="gpu-1")
    assert entries == ollama_tags_entries(body, backend="gpu-1")  # stable digest
    assert entries[0]["digest"] != ollama_tags_entries(body, backend="gpu-2")[0]["digest"]
    listing = ollama.ListResponse.model_validate_json(ollama_tags_body(entries))
    model = listing.models[0]
    assert (model.model, model.size, len(model.digest)) == ("Qwen/Qwen3-8B", 0, 64)
    assert model.modified_at.isoformat() == "2025-05-01T10:00:00+00:00"
    assert json.loads(ollama_tags_body([])) == {"models": []}


def test_ollama_tags_to_openai_models() -> None:
    body = json.dumps(
        {
            "models": [
                {
                    "name": "llama3.2:latest",
                    "model": "llama3.2:latest",
                    "modified_at": "2025-05-04T17:37:44.706015396-07:00",
                },
                {"name": "jmorgan/coder:7b", "model": "jmorgan/coder:7b", "modified_at": "bogus"},
            ]
        }
    ).encode()
    out = openai_models_body(openai_models_entries(body))
    client = openai.OpenAI(
        api_key="x",
        base_url="http://127.0.0.1:9/v1",
        max_retries=0,
        http_client=httpx.Client(transport=reply_with(out)),
    )
    models = list(client.models.list())
    assert [(m.id, m.created, m.owned_by) for m in models] == [
        ("llama3.2:latest", 1746405464, "library"),
        ("jmorgan/coder:7b", 0, "jmorgan"),
    ]
    assert json.loads(openai_models_body([])) == {"object": "list", "data": []}
    assert openai_models_entries(b'{"models": null}') == []


@pytest.mark.parametrize(
    ("status", "body", "expected_status", "message"),
    [
        (
            404,
            b'{"error":{"message":"The model `x` does not exist.","type":"NotFoundError",'
            b'"param":null,"code":404}}',
            404,
            "The model `x` does not exist.",
        ),
        (
            400,
            b'{"object":"error","message":"bad temperature","type":"BadRequestError",'
            b'"param":null,"code":400}',
            400,
            "bad temperature",
        ),
        (422, b'{"detail":"field required"}', 400, "field required"),
        (401, b'{"error":"Unauthorized"}', 401, "Unauthorized"),
        (502, b"<html>Bad Gateway</html>", 502, "<html>Bad Gateway</html>"),
        (500, b"", 500, "backend answered with status 500"),
    ],
)
def test_openai_errors_to_ollama(status: int, body: bytes, expected_status: int, message: str) -> None:
    got_status, got_body = ollama_error_from_openai(status, body)
    assert (got_status, json.loads(got_body)) == (expected_status, {"error": message})
    client = ollama.Client(host="http://127.0.0.1:9", transport=reply_with(got_body, got_status))
    with pytest.raises(ollama.ResponseError) as raised:
        client.show("x")
    assert (raised.value.status_code, raised.value.error) == (expected_status, message)


def test_ollama_model_not_found_to_openai() -> None:
    status, body = openai_error_from_ollama(404, b'{"error":"model \\"x\\" not found, try pulling it first"}')
    client = openai.OpenAI(
        api_key="x",
        base_url="http://127.0.0.1:9/v1",
        max_retries=0,
        http_client=httpx.Client(transport=reply_with(body, status)),
    )
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}])
    assert raised.value.code == "model_not_found" and raised.value.type == "not_found_error"
    assert raised.value.message.endswith('model "x" not found, try pulling it first')


def test_ollama_busy_to_openai_keeps_status() -> None:
    status, body = openai_error_from_ollama(503, b'{"error":"server busy, please try again."}')
    assert status == 503
    assert json.loads(body) == {
        "error": {
            "message": "server busy, please try again.",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }


def test_unsupported_operation_is_501_in_both_shapes() -> None:
    error = unsupported_operation("/api/push", "vllm-1")
    assert isinstance(error, Untranslatable) and error.status == 501
    assert json.loads(error.ollama_body()) == {
        "error": "/api/push is not supported by OpenAI-compatible backend vllm-1"
    }
    assert json.loads(error.openai_body())["error"]["type"] == "server_error"


VLLM_MODELS = json.dumps(
    {
        "object": "list",
        "data": [{"id": "qwen3", "object": "model", "created": 1746093600, "max_model_len": 32768}],
    }
).encode()


def test_show_ps_and_pull_for_models_an_openai_backend_serves() -> None:
    entry = ollama_tags_entries(VLLM_MODELS, backend="gpu-1")[0]
    assert entry["details"]["context_length"] == 32768
    show = ollama_show_body(entry, capabilities=["completion", "tools"])
    client = ollama.Client(host="http://127.0.0.1:9", transport=reply_with(show))
    shown = client.show("qwen3")
    assert shown.capabilities == ["completion", "tools"] and shown.modelinfo == {}
    assert shown.modified_at.isoformat() == "2025-05-01T10:00:00+00:00"
    ps = ollama_ps_body([entry], expires_at_ns=NOW_NS)
    running = ollama.ProcessResponse.model_validate_json(ps).models[0]
    assert (running.model, running.size_vram, running.expires_at.year) == ("qwen3", 0, 2025)
    streamed = ollama_pull_reply(stream=True)
    assert streamed.body == b'{"status":"success"}\n' and streamed.content_type == "application/x-ndjson"
    whole = ollama_pull_reply(stream=False)
    client = ollama.Client(host="http://127.0.0.1:9", transport=reply_with(whole.body))
    assert client.pull("qwen3").status == "success"


def test_retrieve_one_openai_model() -> None:
    entry = openai_models_entries(
        b'{"models":[{"model":"llama3.2:latest","modified_at":"2025-05-01T10:00:00Z"}]}'
    )[0]
    client = openai.OpenAI(
        api_key="x",
        base_url="http://127.0.0.1:9/v1",
        max_retries=0,
        http_client=httpx.Client(transport=reply_with(openai_model_body(entry))),
    )
    model = client.models.retrieve("llama3.2:latest")
    assert (model.id, model.created, model.owned_by) == ("llama3.2:latest", 1746093600, "library")
