"""Reading a model artifact by contract (layout in docs/artifacts.md, written by training).

Serving never imports ``training``; it relies only on the file names and the manifest
fields below, which ``tests/integration`` pins against what training really writes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from artifacts.checksums import MANIFEST_NAME, verify_files
from artifacts.errors import InvalidArtifact

MODEL_SCHEMA = "recall.model/v1"


@dataclass(frozen=True)
class ModelArtifact:
    """A verified model artifact directory on local disk."""

    path: Path
    manifest: dict[str, Any]

    @property
    def model_version(self) -> str:
        return str(self.manifest["model_version"])

    @property
    def embedding_dim(self) -> int:
        return int(self.manifest["embedding_dim"])

    def item_ids(self) -> list[str]:
        return [str(i) for i in json.loads((self.path / "item_ids.json").read_text())]

    def item_vectors(self) -> np.ndarray:
        """[n_items, dim] float32 (row i ↔ item_ids()[i])."""
        return np.load(self.path / "item_vectors.npy").astype(np.float32, copy=False)

    def user_ids(self) -> list[str]:
        return [str(u) for u in json.loads((self.path / "user_ids.json").read_text())]

    def user_vectors(self, mmap: bool = True) -> np.ndarray:
        """[n_users, dim] float32 (row i ↔ user_ids()[i]); memory-mapped by default."""
        return np.load(self.path / "user_vectors.npy", mmap_mode="r" if mmap else None)

    def popular_items(self) -> list[dict[str, Any]]:
        return list(json.loads((self.path / "popular_items.json").read_text()))


def open_model_artifact(path: Path, *, verify: bool = True) -> ModelArtifact:
    """Read the manifest and (by default) check every file's size and SHA-256.

    Raises:
        InvalidArtifact: no readable manifest or a different schema.
        ChecksumMismatch: a file is missing or differs from the manifest.
    """
    try:
        manifest = json.loads((path / MANIFEST_NAME).read_text())
    except (OSError, ValueError) as exc:
        raise InvalidArtifact(f"{path}: no readable {MANIFEST_NAME} ({exc})") from exc
    if manifest.get("schema_id") != MODEL_SCHEMA:
        raise InvalidArtifact(
            f"{path}: schema {manifest.get('schema_id')!r}, expected {MODEL_SCHEMA}"
        )
    if verify:
        verify_files(path, manifest["files"])
    return ModelArtifact(path=path, manifest=manifest)
