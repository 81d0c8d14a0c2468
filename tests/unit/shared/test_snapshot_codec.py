"""The incremental snapshot codec gives exactly what shared.snapshot's seal/encode/decode give: the same
bytes on the control plane, the same snapshots (and the same rejections) on the data plane, while
re-using the unchanged parts of the previous snapshot."""

from __future__ import annotations

import hashlib

import msgspec
import pytest

from shared.errors import SnapshotRejected
from shared.signing import sign
from shared.snapshot import (
    ApiKeyView,
    BackendShare,
    BackendView,
    ClusterView,
    DataPlaneView,
    FrontendView,
    LoadedModel,
    Snapshot,
    SnapshotContent,
    decode,
    encode,
    seal,
)
from shared.snapshot_codec import SnapshotDecoder, SnapshotSealer
from tests.support.signing import fixed_signer

AT = "2025-01-01T00:00:00Z"


def _backend(i: int, **changes: object) -> BackendView:
    view = BackendView(
        id=f"b{i:03d}",
        base_url=f"http://10.0.0.{i % 250}:11434",
        labels=("gpu",) if i % 3 == 0 else (),
        models=("llama3:latest", "qwen:0.5b"),
        models_known=True,
        models_loaded=(LoadedModel(name="llama3:latest", size_vram=i),),
        pinned_completions_properties={"options": {"temperature": 0.5, "num_ctx": i}},
        sealed_secrets=f"v1.k.{i}" if i % 7 == 0 else "",
    )
    return msgspec.structs.replace(view, **changes)


def _content(backends: list[BackendView], *, rate: object = 2.5) -> SnapshotContent:
    ids = [b.id for b in backends]
    planes = tuple(
        DataPlaneView(
            id=f"dp{p}",
            # An int for a float field: sealing normalises it to the float every reader sees.
            shares={i: BackendShare(max_parallel=1, rate_per_second=rate) for i in ids},  # type: ignore[arg-type]
            key_rates={"k1": 1},  # type: ignore[dict-item]
        )
        for p in (2, 0, 1)
    )
    return SnapshotContent(
        frontends=(
            FrontendView(id="f2", hostname="two", backends=tuple(ids[10:])),
            FrontendView(
                id="f1", hostname="one", backends=tuple(ids[:10]), pinned_embeddings_properties={"b": 1}
            ),
        ),
        backends=tuple(reversed(backends)),  # not in canonical order: sealing sorts
        cluster=ClusterView(dataplanes=planes, admin_token_digests=("ff", "aa")),
        api_keys=(ApiKeyView(id="k1", digest="d", frontends=("f1",), rate_limit_requests_per_second=3),),  # type: ignore[arg-type]
    )


def _changes() -> list[SnapshotContent]:
    """A run of contents as a publisher meets them: one backend changed at a time, one added, one
    removed, the same content rebuilt from new objects, the shares changed."""
    backends = [_backend(i) for i in range(40)]
    steps = [_content(backends)]
    backends[7] = _backend(7, name="renamed")
    steps.append(_content(backends))
    backends[9] = _backend(9, healthy=False)
    steps.append(_content(backends))
    backends.insert(0, BackendView(id="a-first", base_url="http://new:1"))  # every later one shifts
    steps.append(_content(backends))
    del backends[20]
    steps.append(_content(backends))
    steps.append(_content([msgspec.structs.replace(b) for b in backends]))  # equal, not the same objects
    steps.append(_content(backends, rate=1))
    steps.append(_content(backends[:3]))
    steps.append(_content(backends))
    return steps


def test_the_sealer_gives_the_bytes_seal_and_encode_give() -> None:
    sealer = SnapshotSealer()
    for revision, content in enumerate(_changes(), start=1):
        quick = sealer.seal(content, revision=revision, generated_at=AT)
        full = seal(content, revision=revision, generated_at=AT)
        assert quick == full
        signed = sign(quick, fixed_signer())
        assert sealer.encode(signed) == encode(sign(full, fixed_signer()))
    # A snapshot of other content than the last sealed one is encoded the full way, still right.
    other = seal(_changes()[0], revision=99, generated_at=AT)
    assert sealer.encode(other) == encode(other)


def test_the_decoder_gives_what_decode_gives_and_keeps_unchanged_parts() -> None:
    sealer, decoder = SnapshotSealer(), SnapshotDecoder()
    previous: Snapshot | None = None
    for revision, content in enumerate(_changes(), start=1):
        data = sealer.encode(sign(sealer.seal(content, revision=revision, generated_at=AT), fixed_signer()))
        snapshot = decoder.decode(data)
        assert snapshot == decode(data)
        if previous is not None:
            before = {b.id: b for b in previous.content.backends}
            for backend in snapshot.content.backends:
                if before.get(backend.id) == backend:
                    assert before[backend.id] is backend  # kept, not decoded again
        previous = snapshot


def _spelled(snapshot: Snapshot, content: bytes, content_hash: str) -> bytes:
    """``snapshot``'s bytes with its content spelled as ``content`` and the given hash."""
    head = encode(msgspec.structs.replace(snapshot, content_hash=content_hash, content=SnapshotContent()))
    empty = msgspec.json.encode(SnapshotContent())
    assert head.count(empty) == 1
    return head.replace(empty, content)


def _decoded_alike(decoder: SnapshotDecoder, data: bytes) -> Snapshot | str:
    """What both decoders make of ``data``: the same snapshot, or the same rejection."""
    try:
        expected: Snapshot | str = decode(data)
    except SnapshotRejected as exc:
        expected = exc.message
    try:
        got: Snapshot | str = decoder.decode(data)
    except SnapshotRejected as exc:
        got = exc.message
    assert got == expected
    return got


def test_anything_but_the_canonical_bytes_is_judged_as_decode_judges_it() -> None:
    decoder = SnapshotDecoder()
    content = _changes()[1]
    good = seal(content, revision=5, generated_at=AT)
    canonical = msgspec.json.encode(good.content, order="deterministic")
    assert isinstance(_decoded_alike(decoder, encode(good)), Snapshot)
    # Two neighbours swapped, each slice where the other was: judged as decode judges it.
    wire = msgspec.json.decode(canonical)
    wire["backends"][3], wire["backends"][4] = wire["backends"][4], wire["backends"][3]
    swapped = _decoded_alike(decoder, _spelled(good, msgspec.json.encode(wire), good.content_hash))
    assert isinstance(swapped, Snapshot) and swapped.content.backends[3].id > swapped.content.backends[4].id

    # The same content spelled with spaces, hashed as spelled: decode recomputes the canonical hash.
    spaced = canonical.replace(b',"backends":', b', "backends": ')
    assert "fails its content hash" in str(
        _decoded_alike(decoder, _spelled(good, spaced, hashlib.sha256(spaced).hexdigest()))
    )
    # Backends out of order but the canonical hash: decode accepts it (and keeps their order).
    wire = msgspec.json.decode(canonical)
    wire["backends"].reverse()
    unordered = msgspec.json.encode(wire)
    accepted = _decoded_alike(decoder, _spelled(good, unordered, good.content_hash))
    assert isinstance(accepted, Snapshot) and accepted.content.backends[0].id == "b039"
    # An int where a float belongs, under the canonical hash: accepted as the float.
    wire = msgspec.json.decode(canonical)
    wire["cluster"]["dataplanes"][0]["key_rates"]["k1"] = 1
    assert isinstance(
        _decoded_alike(decoder, _spelled(good, msgspec.json.encode(wire), good.content_hash)), Snapshot
    )
    # Tampered, undecodable, a wrong type, another schema major.
    assert "fails its content hash" in str(
        _decoded_alike(decoder, encode(good).replace(b"renamed", b"RENAMED"))
    )
    assert "undecodable" in str(_decoded_alike(decoder, encode(good)[:-10]))
    bad_type = canonical.replace(b'"max_parallel":1', b'"max_parallel":"1"', 1)
    assert "invalid snapshot" in str(
        _decoded_alike(decoder, _spelled(good, bad_type, hashlib.sha256(bad_type).hexdigest()))
    )
    assert "schema major" in str(_decoded_alike(decoder, encode(msgspec.structs.replace(good, schema=2))))
    # None of that spoilt what it keeps: the next snapshot decodes as ever.
    after = seal(_changes()[2], revision=6, generated_at=AT)
    assert decoder.decode(encode(after)) == after


def test_a_mirror_out_of_step_with_the_snapshot_is_refused_at_import() -> None:
    from shared import snapshot_codec

    class Fewer(msgspec.Struct):
        frontends: tuple[str, ...] = ()

    with pytest.raises(RuntimeError, match="no longer mirrors"):
        snapshot_codec._mirrors(Fewer, SnapshotContent)
