"""artifacts.checksums: listing files with size + SHA-256 and verifying them."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from artifacts.checksums import MANIFEST_NAME, list_files, sha256_file, verify_files
from artifacts.errors import ArtifactError, ChecksumMismatch


@pytest.fixture
def artifact_dir(tmp_path: Path) -> Path:
    d = tmp_path / "artifact"
    (d / "sub" / "deeper").mkdir(parents=True)
    (d / "a.bin").write_bytes(b"\x00\x01\x02hello")
    (d / "b.json").write_text('{"x": 1}\n')
    (d / "sub" / "deeper" / "c.txt").write_text("nested")
    (d / "sub" / MANIFEST_NAME).write_text("not the root manifest")
    (d / MANIFEST_NAME).write_text("{}")
    return d


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "big"
    payload = bytes(range(256)) * 9000  # > 1 MiB chunk, so chunking is exercised
    path.write_bytes(payload)
    assert sha256_file(path) == hashlib.sha256(payload).hexdigest()


def test_list_files_lists_every_file_but_the_root_manifest(artifact_dir: Path) -> None:
    entries = list_files(artifact_dir)
    paths = [e["path"] for e in entries]
    assert paths == ["a.bin", "b.json", "sub/deeper/c.txt", f"sub/{MANIFEST_NAME}"]
    by_path = {e["path"]: e for e in entries}
    assert by_path["a.bin"]["size"] == 8
    assert by_path["a.bin"]["sha256"] == hashlib.sha256(b"\x00\x01\x02hello").hexdigest()
    assert by_path["sub/deeper/c.txt"]["sha256"] == hashlib.sha256(b"nested").hexdigest()
    assert set(entries[0]) == {"path", "size", "sha256"}


def test_verify_files_accepts_untouched_directory(artifact_dir: Path) -> None:
    verify_files(artifact_dir, list_files(artifact_dir))


def test_verify_files_detects_a_flipped_byte_of_the_same_size(artifact_dir: Path) -> None:
    entries = list_files(artifact_dir)
    raw = bytearray((artifact_dir / "b.json").read_bytes())
    raw[2] ^= 0x01
    (artifact_dir / "b.json").write_bytes(bytes(raw))
    with pytest.raises(ChecksumMismatch, match=r"b\.json: sha256"):
        verify_files(artifact_dir, entries)


def test_verify_files_detects_a_missing_file(artifact_dir: Path) -> None:
    entries = list_files(artifact_dir)
    (artifact_dir / "sub" / "deeper" / "c.txt").unlink()
    with pytest.raises(ChecksumMismatch, match=r"sub/deeper/c\.txt: .*missing"):
        verify_files(artifact_dir, entries)


def test_verify_files_detects_a_size_change(artifact_dir: Path) -> None:
    entries = list_files(artifact_dir)
    with (artifact_dir / "a.bin").open("ab") as f:
        f.write(b"!")
    with pytest.raises(ChecksumMismatch, match=r"a\.bin: size 9 bytes, manifest says 8"):
        verify_files(artifact_dir, entries)


def test_verify_files_detects_a_directory_in_place_of_a_file(artifact_dir: Path) -> None:
    entries = list_files(artifact_dir)
    (artifact_dir / "a.bin").unlink()
    (artifact_dir / "a.bin").mkdir()
    with pytest.raises(ChecksumMismatch, match="missing"):
        verify_files(artifact_dir, entries)


def test_checksum_mismatch_is_an_artifact_error() -> None:
    assert issubclass(ChecksumMismatch, ArtifactError)
