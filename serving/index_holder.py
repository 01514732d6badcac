"""Holds the serving index and swaps it atomically.

Readers call ``current()`` once per request and use that object to the end of the
request; ``swap`` replaces the reference (a single assignment, atomic under the GIL). The
old index is never mutated or closed while a request may hold it; it is freed by the
garbage collector once the last request using it finishes.

When the store has trusted keys (``RECALL_TRUSTED_KEYS_DIR``), a load also requires the
index's manifest and the manifest of the model it was built from to be signed by one of
them (artifacts/signing.py); anything else is an IndexLoadError (FAILED_PRECONDITION)
and the old index keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from artifacts.checksums import MANIFEST_NAME, SIGNATURE_NAME
from artifacts.errors import ArtifactError, ArtifactNotFound, UntrustedArtifact
from artifacts.signing import TrustedKeys
from artifacts.store import ArtifactStore
from serving.errors import IndexLoadError, IndexVersionNotFound, NoIndexLoaded
from serving.index.artifact import INDEX_KIND, IndexManifest
from serving.index.loaded import LoadedIndex, load_index_dir

log = logging.getLogger(__name__)

MODEL_KIND = "models"


class IndexHolder:
    def __init__(self, store: ArtifactStore) -> None:
        self.store = store
        self._current: LoadedIndex | None = None
        self._load_lock = asyncio.Lock()

    def current(self) -> LoadedIndex:
        """The serving index. Raises NoIndexLoaded before the first successful load."""
        loaded = self._current
        if loaded is None:
            raise NoIndexLoaded("no index loaded yet; publish one and call RecallAdmin/LoadIndex")
        return loaded

    def current_or_none(self) -> LoadedIndex | None:
        return self._current

    def resolve(self, version: str | None) -> str:
        """``version`` or the store's LATEST index version."""
        try:
            resolved = self.store.resolve(INDEX_KIND, version)
            if not self.store.exists(INDEX_KIND, resolved):
                raise ArtifactNotFound(f"{INDEX_KIND}/{resolved} is not in {self.store.root}")
            return resolved
        except ArtifactNotFound as exc:
            raise IndexVersionNotFound(str(exc)) from exc
        except ArtifactError as exc:
            raise IndexLoadError(str(exc)) from exc

    async def load(self, version: str | None) -> tuple[LoadedIndex, LoadedIndex | None]:
        """Verify and load ``version`` (LATEST if None), then swap it in.

        Loads are serialised; the blocking work (download, SHA-256, read) runs in a thread
        so requests keep being served by the old index meanwhile. On any failure the old
        index stays in place and the error propagates.

        Returns:
            (new index, previous index or None).
        """
        async with self._load_lock:
            # Store look-ups may be network calls (fsspec URLs): keep them off the event loop.
            resolved = await asyncio.to_thread(self.resolve, version)
            loaded = await asyncio.to_thread(self._load_blocking, resolved)
            previous, self._current = self._current, loaded
            log.info(
                "serving index %s (model %s, %d items)",
                loaded.index_version,
                loaded.model_version,
                loaded.item_count,
            )
            return loaded, previous

    def _load_blocking(self, version: str) -> LoadedIndex:
        try:
            path: Path = self.store.local_dir(INDEX_KIND, version)
        except ArtifactNotFound as exc:
            raise IndexVersionNotFound(str(exc)) from exc
        except UntrustedArtifact as exc:
            raise IndexLoadError(f"index {version} refused: {exc}") from exc
        except (ArtifactError, OSError) as exc:
            raise IndexLoadError(f"cannot fetch index {version}: {exc}") from exc
        trusted = self.store.trusted_keys
        signed = self._signed_manifest(path, version, trusted) if trusted else None
        loaded = load_index_dir(path)
        if signed is not None and IndexManifest.model_validate_json(signed) != loaded.manifest:
            # The manifest changed between the signature check and the load.
            raise IndexLoadError(f"index {version} refused: its manifest changed while loading")
        if loaded.index_version != version:
            raise IndexLoadError(
                f"directory {version} holds a manifest for index {loaded.index_version}"
            )
        if trusted is not None:
            self._check_model_signature(loaded, trusted)
        loaded.candidate_wire  # noqa: B018  built here, in the loading thread, not on the loop
        return loaded

    @staticmethod
    def _signed_manifest(path: Path, version: str, trusted: TrustedKeys) -> bytes:
        """The index manifest's bytes, read once and verified against its signature."""
        try:
            manifest = (path / MANIFEST_NAME).read_bytes()
            sig_path = path / SIGNATURE_NAME
            signature = sig_path.read_bytes() if sig_path.is_file() else None
            trusted.verify(manifest, signature, f"{INDEX_KIND}/{version}")
        except UntrustedArtifact as exc:
            raise IndexLoadError(f"index {version} refused: {exc}") from exc
        except OSError as exc:
            raise IndexLoadError(f"index {version}: cannot read {MANIFEST_NAME}: {exc}") from exc
        return manifest

    def _check_model_signature(self, loaded: LoadedIndex, trusted: TrustedKeys) -> None:
        """The model an index pairs with (its user vectors feed self-repair) must be signed
        too; only its manifest and signature are read, not the whole model."""
        model = loaded.model_version
        try:
            self.store.verify_signature(MODEL_KIND, model, trusted)
        except ArtifactNotFound as exc:
            raise IndexLoadError(
                f"index {loaded.index_version} refused: its model {model} is not in "
                f"{self.store.root}, so its signature cannot be checked"
            ) from exc
        except (ArtifactError, OSError) as exc:
            raise IndexLoadError(
                f"index {loaded.index_version} refused: its model {model}: {exc}"
            ) from exc
