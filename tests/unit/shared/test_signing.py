"""Snapshot signatures: what a data plane accepts, and the key files behind it."""

from __future__ import annotations

import stat
from pathlib import Path

import msgspec
import pytest

from dataplane.state import SnapshotState
from shared.errors import ConfigError, SnapshotRejected
from shared.signing import SnapshotTrust, sign, signed_message
from shared.signing_keys import ensure_key_pair, load_signer, load_trust
from shared.snapshot import BackendView, FrontendView, SnapshotContent, accept, encode, seal
from tests.support.signing import fixed_signer, fixed_trust, other_signer, write_test_keys


def _sealed(revision: int, url: str = "http://a:1"):
    content = SnapshotContent(
        frontends=(FrontendView(id="f", backends=("a",)),),
        backends=(BackendView(id="a", base_url=url),),
    )
    return seal(content, revision=revision, generated_at="2025-01-01T00:00:00Z")


def test_a_signed_snapshot_is_accepted_and_unsigned_or_foreign_ones_are_not() -> None:
    trust = fixed_trust()
    good = sign(_sealed(3), fixed_signer())
    assert accept(None, encode(good), trust=trust).revision == 3
    with pytest.raises(SnapshotRejected, match="unsigned"):
        accept(None, encode(_sealed(4)), trust=trust)
    with pytest.raises(SnapshotRejected, match="not trusted"):
        accept(None, encode(sign(_sealed(4), other_signer())), trust=trust)


def test_a_signature_moved_to_other_content_or_a_changed_header_is_refused() -> None:
    trust = fixed_trust()
    good = sign(_sealed(3), fixed_signer())
    # Same revision, other content (its own, valid content hash), the good snapshot's signature.
    moved = msgspec.structs.replace(_sealed(3, url="http://evil:1"), signature=good.signature)
    with pytest.raises(SnapshotRejected, match="forged"):
        accept(None, encode(moved), trust=trust)
    # A newer revision number on the signed content.
    bumped = msgspec.structs.replace(good, revision=99)
    with pytest.raises(SnapshotRejected, match="forged"):
        accept(None, encode(bumped), trust=trust)
    broken = msgspec.structs.replace(good, signature=msgspec.structs.replace(good.signature, value="!!"))
    with pytest.raises(SnapshotRejected, match="forged or broken"):
        accept(None, encode(broken), trust=trust)


def test_the_signature_covers_a_small_header_not_the_content() -> None:
    message = signed_message(_sealed(3), "abcd")
    assert len(message) < 200
    assert b"http://a:1" not in message


def test_several_keys_are_trusted_during_a_rotation() -> None:
    old, new = fixed_signer(), other_signer()
    trust = SnapshotTrust.of([old.private_key.public_key(), new.private_key.public_key()])
    assert accept(None, encode(sign(_sealed(1), old)), trust=trust).revision == 1
    assert accept(None, encode(sign(_sealed(2), new)), trust=trust).revision == 2


def test_unsigned_snapshots_pass_only_when_allowed() -> None:
    assert accept(None, encode(_sealed(1)), trust=SnapshotTrust(allow_unsigned=True)).revision == 1
    with pytest.raises(SnapshotRejected):
        accept(None, encode(_sealed(1)), trust=SnapshotTrust())
    # Keys given and unsigned allowed: a foreign signature is still refused.
    trust = SnapshotTrust.of([fixed_signer().private_key.public_key()], allow_unsigned=True)
    with pytest.raises(SnapshotRejected, match="not trusted"):
        accept(None, encode(sign(_sealed(1), other_signer())), trust=trust)


def test_a_forged_cache_file_is_not_applied_at_start(tmp_path: Path) -> None:
    cache = tmp_path / "snapshot.json"
    cache.write_bytes(encode(sign(_sealed(5), other_signer())))
    state = SnapshotState(cache_path=cache, trust=fixed_trust())
    assert not state.load_cache()
    assert state.snapshot is None
    assert "not trusted" in state.error
    cache.write_bytes(encode(sign(_sealed(5), fixed_signer())))
    assert SnapshotState(cache_path=cache, trust=fixed_trust()).load_cache()


def test_key_files_load_and_bad_ones_name_the_setting(tmp_path: Path) -> None:
    keys = write_test_keys(tmp_path)
    assert load_signer(keys.private).key_id == fixed_signer().key_id
    assert set(load_trust([keys.public]).keys) == {fixed_signer().key_id}
    with pytest.raises(ConfigError, match="OLLAMAFLOW_SNAPSHOT_PUBLIC_KEY_FILES is required"):
        load_trust([])
    assert load_trust([], allow_unsigned=True).allow_unsigned
    with pytest.raises(ConfigError, match=r"OLLAMAFLOW_SNAPSHOT_SIGNING_KEY_FILE.*not an unencrypted PEM"):
        load_signer(keys.public)
    with pytest.raises(ConfigError, match=r"OLLAMAFLOW_SNAPSHOT_PUBLIC_KEY_FILES.*cannot read"):
        load_trust([tmp_path / "missing.pem"])


def test_a_generated_key_pair_is_private_to_its_owner_and_kept(tmp_path: Path) -> None:
    private, public = ensure_key_pair(tmp_path / "keys")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    first = private.read_bytes()
    assert ensure_key_pair(tmp_path / "keys") == (private, public)
    assert private.read_bytes() == first
    signer = load_signer(private)
    assert set(load_trust([public]).keys) == {signer.key_id}
