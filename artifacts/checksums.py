"""File listings with size and SHA-256, and their verification.

A listing is ``[{"path": "index.faiss", "size": 1234, "sha256": "ab…"}, …]`` with paths
relative to the artifact directory, POSIX separators, sorted by path. ``manifest.json``
itself is never listed (it holds the listing), nor is its detached signature
``manifest.sig`` (it signs the manifest, so it is made after it).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from typing_extensions import TypedDict

from artifacts.errors import ChecksumMismatch

MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"  # artifacts/signing.py: written after the manifest
_CHUNK = 1 << 20


class FileEntry(TypedDict):
    path: str
    size: int
    sha256: str


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (constant memory)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def list_files(directory: Path) -> list[FileEntry]:
    """Size and SHA-256 of every regular file under ``directory`` except the manifest."""
    entries: list[FileEntry] = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        if rel in (MANIFEST_NAME, SIGNATURE_NAME):
            continue
        entries.append({"path": rel, "size": path.stat().st_size, "sha256": sha256_file(path)})
    return entries


def verify_files(directory: Path, entries: list[FileEntry]) -> None:
    """Check that every listed file exists with the listed size and SHA-256.

    Raises:
        ChecksumMismatch: naming the first file that is missing or differs.
    """
    for entry in entries:
        path = directory / entry["path"]
        if not path.is_file():
            raise ChecksumMismatch(f"{entry['path']}: listed in the manifest but missing")
        size = path.stat().st_size
        if size != entry["size"]:
            raise ChecksumMismatch(
                f"{entry['path']}: size {size} bytes, manifest says {entry['size']}"
            )
        actual = sha256_file(path)
        if actual != entry["sha256"]:
            raise ChecksumMismatch(
                f"{entry['path']}: sha256 {actual[:12]}…, manifest says {entry['sha256'][:12]}…"
            )
