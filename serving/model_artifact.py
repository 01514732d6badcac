"""Reading a model artifact by contract (layout in docs/artifacts.md, written by training).

Serving never imports ``training``; it relies only on the file names and the manifest
fields below, which ``tests/integration`` pins against what training really writes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from artifacts.checksums import MANIFEST_NAME, verify_files
from artifacts.errors import ArtifactError, ArtifactNotFound, ChecksumMismatch, InvalidArtifact
from artifacts.store import ArtifactStore
from catalogue.canonical_map import (
    DUPLICATES_FILE,
    EMPTY_MAP,
    CanonicalMap,
    CanonicalMapError,
    read_canonical_map,
)

log = logging.getLogger(__name__)

MODEL_SCHEMA = "recall.model/v1"
MODEL_KIND = "models"


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

    def user_count(self) -> int:
        """The model's users: the manifest's ``user_count``, else ``user_ids.json``'s length."""
        declared = self.manifest.get("user_count")
        return declared if isinstance(declared, int) else len(self.user_ids())

    def user_vectors(self, mmap: bool = True) -> np.ndarray:
        """[n_users, dim] float32 (row i ↔ user_ids()[i]); memory-mapped by default."""
        return np.load(self.path / "user_vectors.npy", mmap_mode="r" if mmap else None)

    def popular_items(self) -> list[dict[str, Any]]:
        return list(json.loads((self.path / "popular_items.json").read_text()))

    def canonical_map(self) -> CanonicalMap:
        """The duplicate groups training merged (duplicates.json; empty for models made
        before the map existed). Raises CanonicalMapError when the file is malformed."""
        return read_canonical_map(self.path)


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


def fetch_canonical_map(store: ArtifactStore, model_version: str) -> CanonicalMap:
    """``models/<model_version>/duplicates.json`` from ``store``, reading only the manifest
    and that file (not the whole artifact: a recall server needs nothing else of it), its
    size and SHA-256 checked against the manifest; the manifest's signature too when the
    store has trusted keys.

    Returns the empty map when the model lists no such file (published before the map).

    Raises:
        ArtifactNotFound: no such model in the store.
        ArtifactError: unsigned/untrusted manifest, checksum mismatch, malformed file.
    """
    if store.trusted_keys is not None:
        store.verify_signature(MODEL_KIND, model_version, store.trusted_keys)
    base = store.uri(MODEL_KIND, model_version)
    try:
        manifest = json.loads(store.fs.cat_file(f"{base}/{MANIFEST_NAME}"))
    except FileNotFoundError as exc:
        raise ArtifactNotFound(f"{MODEL_KIND}/{model_version} is not in {store.root}") from exc
    except ValueError as exc:
        raise InvalidArtifact(f"{MODEL_KIND}/{model_version}: unreadable manifest") from exc
    entry = next((f for f in manifest.get("files", []) if f.get("path") == DUPLICATES_FILE), None)
    if entry is None:
        return EMPTY_MAP
    try:
        raw = store.fs.cat_file(f"{base}/{DUPLICATES_FILE}")
    except FileNotFoundError as exc:
        raise ChecksumMismatch(f"{DUPLICATES_FILE}: listed in the manifest but missing") from exc
    if len(raw) != entry["size"] or hashlib.sha256(raw).hexdigest() != entry["sha256"]:
        raise ChecksumMismatch(
            f"{MODEL_KIND}/{model_version}/{DUPLICATES_FILE} differs from its manifest entry"
        )
    try:
        return CanonicalMap.from_json(json.loads(raw), f"{MODEL_KIND}/{model_version}")
    except (ValueError, CanonicalMapError) as exc:
        raise InvalidArtifact(str(exc)) from exc


class CanonicalMaps:
    """Canonical-id maps by model version, read once each (``fetch_canonical_map``).

    A map that cannot be read (model missing from the store, checksum mismatch) is logged
    as an error and replaced by the empty map: the index holds canonical ids only, so the
    server keeps answering with distinct items; only exclusions of non-canonical ids stop
    covering their canonical copy until the model is fixed and the index reloaded.
    """

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store
        self._maps: dict[str, CanonicalMap] = {}
        self._lock = threading.Lock()

    def cached(self, model_version: str) -> CanonicalMap | None:
        """The map if already read, else None (no I/O: safe on the event loop)."""
        return self._maps.get(model_version)

    async def for_model(self, model_version: str) -> CanonicalMap:
        """The map of ``model_version`` from the event loop: cached, or read once off the
        loop (the first call on a model)."""
        found = self.cached(model_version)
        if found is None:
            found = await asyncio.to_thread(self.get, model_version)
        return found

    def get(self, model_version: str) -> CanonicalMap:
        """The map of ``model_version``, read on first use (blocking I/O)."""
        found = self._maps.get(model_version)
        if found is not None:
            return found
        with self._lock:
            found = self._maps.get(model_version)
            if found is None:
                try:
                    found = fetch_canonical_map(self.store, model_version)
                except ArtifactNotFound as exc:  # e.g. an index copied without its model
                    log.warning("model %s: no canonical-id map (%s)", model_version, exc)
                    found = EMPTY_MAP
                except (ArtifactError, OSError) as exc:
                    log.error(
                        "model %s: canonical-id map unavailable (%s); serving without it",
                        model_version,
                        exc,
                    )
                    found = EMPTY_MAP
                # Old versions stay small (a few KB each) and bounded by the loads done.
                self._maps[model_version] = found
        return found
