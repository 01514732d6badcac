"""Signed manifests (artifacts/signing.py) and the store's signer / trusted-keys hooks."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from artifacts.checksums import MANIFEST_NAME, SIGNATURE_NAME, list_files
from artifacts.errors import InvalidArtifact, UntrustedArtifact
from artifacts.signing import (
    SIGNING_KEY_ENV,
    KeyPairFiles,
    ManifestSigner,
    SigningKeyError,
    TrustedKeys,
    generate_keypair,
    load_public_key,
    signer_from_env,
    trusted_keys_from,
)
from artifacts.store import ArtifactStore


def artifact(tmp_path: Path, name: str = "src") -> Path:
    """A directory with one data file and a manifest listing it."""
    src = tmp_path / name
    src.mkdir()
    (src / "data.bin").write_bytes(b"\x00\x01payload")
    doc = {"schema_id": "test/v1", "files": list_files(src)}
    (src / MANIFEST_NAME).write_text(json.dumps(doc))
    return src


def keys_dir(tmp_path: Path, *pairs: KeyPairFiles) -> Path:
    """A trusted-keys directory holding the public halves of ``pairs``."""
    directory = tmp_path / "trusted"
    directory.mkdir(exist_ok=True)
    for pair in pairs:
        (directory / pair.public_key.name).write_bytes(pair.public_key.read_bytes())
    return directory


@pytest.fixture
def old(tmp_path: Path) -> KeyPairFiles:
    return generate_keypair(tmp_path / "keys-old", "old")


@pytest.fixture
def new(tmp_path: Path) -> KeyPairFiles:
    return generate_keypair(tmp_path / "keys-new", "new")


def test_generated_private_key_is_owner_only_and_never_overwritten(
    old: KeyPairFiles,
) -> None:
    assert stat.S_IMODE(old.private_key.stat().st_mode) == 0o600
    assert old.private_key.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert len(old.key_id) == 16
    with pytest.raises(SigningKeyError, match="refusing to overwrite"):
        generate_keypair(old.private_key.parent, "old")


def test_sign_verify_round_trip_names_the_signing_key(tmp_path: Path, old: KeyPairFiles) -> None:
    src = artifact(tmp_path)
    sig = ManifestSigner.from_file(old.private_key).sign_dir(src)
    doc = json.loads(sig.read_text())
    assert sig.name == SIGNATURE_NAME
    assert doc["key_id"] == old.key_id and doc["algorithm"] == "ed25519"
    assert TrustedKeys.from_dir(keys_dir(tmp_path, old)).verify_dir(src) == old.key_id


def test_tampered_manifest_fails(tmp_path: Path, old: KeyPairFiles) -> None:
    src = artifact(tmp_path)
    ManifestSigner.from_file(old.private_key).sign_dir(src)
    doc = json.loads((src / MANIFEST_NAME).read_text())
    doc["files"][0]["sha256"] = "0" * 64  # a swapped data file, checksum updated to match
    (src / MANIFEST_NAME).write_text(json.dumps(doc))
    with pytest.raises(UntrustedArtifact, match=f"signature by key {old.key_id} does not match"):
        TrustedKeys.from_dir(keys_dir(tmp_path, old)).verify_dir(src)


def test_unsigned_and_malformed_signatures_fail(tmp_path: Path, old: KeyPairFiles) -> None:
    src = artifact(tmp_path)
    trusted = TrustedKeys.from_dir(keys_dir(tmp_path, old))
    with pytest.raises(UntrustedArtifact, match="unsigned"):
        trusted.verify_dir(src)
    (src / SIGNATURE_NAME).write_text('{"key_id": "x", "signature": "not base64!"}')
    with pytest.raises(UntrustedArtifact, match="malformed"):
        trusted.verify_dir(src)


def test_a_key_outside_the_trusted_set_is_named(
    tmp_path: Path, old: KeyPairFiles, new: KeyPairFiles
) -> None:
    src = artifact(tmp_path)
    ManifestSigner.from_file(new.private_key).sign_dir(src)
    with pytest.raises(UntrustedArtifact, match=f"key {new.key_id}, which is not trusted") as e:
        TrustedKeys.from_dir(keys_dir(tmp_path, old)).verify_dir(src)
    assert old.key_id in str(e.value)  # the message lists what is trusted


def test_rotation_two_trusted_keys_accept_either_signer(
    tmp_path: Path, old: KeyPairFiles, new: KeyPairFiles
) -> None:
    trusted = TrustedKeys.from_dir(keys_dir(tmp_path, old, new))
    assert trusted.key_ids == sorted([old.key_id, new.key_id])
    by_old, by_new = artifact(tmp_path, "a"), artifact(tmp_path, "b")
    ManifestSigner.from_file(old.private_key).sign_dir(by_old)
    ManifestSigner.from_file(new.private_key).sign_dir(by_new)
    assert trusted.verify_dir(by_old) == old.key_id
    assert trusted.verify_dir(by_new) == new.key_id
    # Retiring the old key: only the new public key is left, the old signature is refused.
    (tmp_path / "trusted" / old.public_key.name).unlink()
    retired = TrustedKeys.from_dir(tmp_path / "trusted")
    assert retired.verify_dir(by_new) == new.key_id
    with pytest.raises(UntrustedArtifact, match=old.key_id):
        retired.verify_dir(by_old)


def test_trusted_keys_dir_must_exist_and_hold_ed25519_keys(
    tmp_path: Path, old: KeyPairFiles
) -> None:
    assert trusted_keys_from(None) is None
    with pytest.raises(SigningKeyError, match="does not exist"):
        trusted_keys_from(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SigningKeyError, match="holds no public key"):
        TrustedKeys.from_dir(empty)
    (empty / "broken.pub").write_text("not a key")
    with pytest.raises(SigningKeyError, match=r"broken\.pub: not a PEM public key"):
        TrustedKeys.from_dir(empty)
    with pytest.raises(SigningKeyError, match=r"expected an Ed25519 key|not a PEM public key"):
        load_public_key(old.private_key)


def test_signer_from_env(tmp_path: Path, old: KeyPairFiles) -> None:
    assert signer_from_env({}) is None
    signer = signer_from_env({SIGNING_KEY_ENV: str(old.private_key)})
    assert signer is not None and signer.key_id == old.key_id
    with pytest.raises(SigningKeyError, match="cannot read signing key"):
        signer_from_env({SIGNING_KEY_ENV: str(tmp_path / "nope.key")})


def test_store_publish_signs_the_copy_and_trusted_reader_checks(
    tmp_path: Path, old: KeyPairFiles, new: KeyPairFiles
) -> None:
    src = artifact(tmp_path)
    root = tmp_path / "store"
    ArtifactStore(root, signer=ManifestSigner.from_file(old.private_key)).publish(
        "indexes", "v1", src
    )
    ArtifactStore(root).publish("indexes", "v2", src)  # no signer: unsigned
    assert not (src / SIGNATURE_NAME).exists()  # the caller's directory is left as it was
    assert (root / "indexes" / "v1" / SIGNATURE_NAME).is_file()
    # A signed artifact's listing never includes its signature.
    assert [e["path"] for e in list_files(root / "indexes" / "v1")] == ["data.bin"]

    trusted = TrustedKeys.from_dir(keys_dir(tmp_path, old))
    reader = ArtifactStore(root, trusted_keys=trusted)
    assert reader.local_dir("indexes", "v1") == root / "indexes" / "v1"
    with pytest.raises(UntrustedArtifact, match="indexes/v2 is unsigned"):
        reader.local_dir("indexes", "v2")
    assert ArtifactStore(root).local_dir("indexes", "v2").is_dir()  # no keys: no check

    assert ArtifactStore(root).verify_signature("indexes", "v1", trusted) == old.key_id
    only_new = TrustedKeys([load_public_key(new.public_key)])
    with pytest.raises(UntrustedArtifact, match=f"signed by key {old.key_id}"):
        ArtifactStore(root).verify_signature("indexes", "v1", only_new)


def test_signer_without_a_manifest_publishes_nothing(tmp_path: Path, old: KeyPairFiles) -> None:
    src = tmp_path / "bare"
    src.mkdir()
    (src / "data.bin").write_bytes(b"x")
    store = ArtifactStore(tmp_path / "store", signer=ManifestSigner.from_file(old.private_key))
    with pytest.raises(InvalidArtifact, match=r"no readable manifest\.json to sign"):
        store.publish("indexes", "v1", src)
    assert store.versions("indexes") == []
