"""A verified, loaded, read-only index artifact, and search over it.

A ``LoadedIndex`` is never mutated after ``load_index_dir`` returns: hot swap replaces the
whole object (``serving.index_holder``), so a search that already holds a reference keeps
a consistent index, id map and fallback list until it finishes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import faiss
import numpy as np

from artifacts.checksums import MANIFEST_NAME, verify_files
from artifacts.errors import ArtifactError
from serving.errors import IndexLoadError
from serving.index.artifact import IndexManifest
from serving.index.search import is_refined, search_parameters
from serving.response_encoding import CandidateWireTable


@dataclass(frozen=True)
class LoadedIndex:
    manifest: IndexManifest
    index: faiss.Index
    item_ids: list[str]  # internal id → external id
    internal_ids: dict[str, int]  # external id → internal id
    popular: list[tuple[str, float]]  # (item_id, popularity share in [0, 1]), best first
    loaded_at: float  # Unix seconds

    @property
    def index_version(self) -> str:
        return self.manifest.index_version

    @property
    def model_version(self) -> str:
        return self.manifest.model_version

    @property
    def item_count(self) -> int:
        return len(self.item_ids)

    @cached_property
    def candidate_wire(self) -> CandidateWireTable:
        """Each item's answer bytes (``serving.response_encoding``), built on first use:
        ~1 s and 16 MB at 1M items, so the server builds it while loading, off the loop
        (``IndexHolder``); other readers of an index never pay for it."""
        return CandidateWireTable(self.item_ids)

    @cached_property
    def _parameters(self) -> dict[tuple[int, int | None], faiss.SearchParameters]:
        return {}

    def _search_parameters(self, nprobe: int, k_factor: int | None) -> faiss.SearchParameters:
        """Faiss's parameter objects for (nprobe, k_factor), made once each: a new pair of
        SWIG objects costs ~17 µs, as much as a small index's search. Searches only read
        them, so threads share them. At most 256 kept (per-request overrides)."""
        cache = self._parameters
        params = cache.get((nprobe, k_factor))
        if params is None:
            if len(cache) >= 256:
                cache.clear()
            params = cache[(nprobe, k_factor)] = search_parameters(self.index, nprobe, k_factor)
        return params

    def search(
        self, queries: np.ndarray, k: int, nprobe: int, *, k_factor: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by inner product. queries: [q, dim] float32 → (scores [q, k], ids [q, k]);
        missing results have id -1. Thread-safe (Faiss search does not mutate the index).

        ``nprobe`` is clamped to 1..nlist. A re-ranked index over-fetches k × ``k_factor``
        IVF-PQ candidates and returns their exact scores (None: the manifest's
        ``refine_factor``; clamped to 1..MAX_REFINE_FACTOR); without re-rank it is ignored.
        """
        params = self._search_parameters(
            max(1, min(nprobe, self.manifest.nlist)),
            self.manifest.refine_factor if k_factor is None else k_factor,
        )
        scores, ids = self.index.search(
            np.ascontiguousarray(queries, dtype=np.float32), k, params=params
        )
        return scores, ids


def load_index_dir(path: Path) -> LoadedIndex:
    """Verify every file against the manifest, then read the index and its id map.

    Raises:
        IndexLoadError: unreadable manifest, checksum mismatch, or inconsistent files.
    """
    try:
        manifest = IndexManifest.model_validate_json((path / MANIFEST_NAME).read_text())
        verify_files(path, manifest.files)
        item_ids = [str(i) for i in json.loads((path / "item_ids.json").read_text())]
        popular_counts = [
            (str(p["item_id"]), int(p["count"]))
            for p in json.loads((path / "popular_items.json").read_text())
        ]
        index = faiss.read_index(str(path / "index.faiss"))
    except ArtifactError as exc:
        raise IndexLoadError(f"index at {path} failed verification: {exc}") from exc
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise IndexLoadError(f"index at {path} could not be read: {exc}") from exc
    if index.ntotal != len(item_ids) or len(item_ids) != manifest.item_count:
        raise IndexLoadError(
            f"index at {path}: {index.ntotal} vectors, {len(item_ids)} ids, "
            f"manifest says {manifest.item_count} items"
        )
    if (manifest.refine != "none") != is_refined(index):
        raise IndexLoadError(
            f"index at {path}: manifest says refine={manifest.refine!r} but index.faiss holds "
            f"{type(index).__name__}"
        )
    total = sum(count for _, count in popular_counts) or 1
    popular = [(item, count / total) for item, count in popular_counts]
    return LoadedIndex(
        manifest=manifest,
        index=index,
        item_ids=item_ids,
        internal_ids={item: i for i, item in enumerate(item_ids)},
        popular=popular,
        loaded_at=time.time(),
    )
