"""Holds the serving index and swaps it atomically.

Readers call ``current()`` once per request and use that object to the end of the
request; ``swap`` replaces the reference (a single assignment, atomic under the GIL). The
old index is never mutated or closed while a request may hold it; it is freed by the
garbage collector once the last request using it finishes.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from artifacts.errors import ArtifactError, ArtifactNotFound
from artifacts.store import ArtifactStore
from serving.errors import IndexLoadError, IndexVersionNotFound, NoIndexLoaded
from serving.index.artifact import INDEX_KIND
from serving.index.loaded import LoadedIndex, load_index_dir

log = logging.getLogger(__name__)


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
        except (ArtifactError, OSError) as exc:
            raise IndexLoadError(f"cannot fetch index {version}: {exc}") from exc
        loaded = load_index_dir(path)
        if loaded.index_version != version:
            raise IndexLoadError(
                f"directory {version} holds a manifest for index {loaded.index_version}"
            )
        return loaded
