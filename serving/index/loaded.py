"""A verified, loaded, read-only index artifact, and search over it.

A ``LoadedIndex`` is never mutated after ``load_index_dir`` returns: hot swap replaces the
whole object (``serving.index_holder``), so a search that already holds a reference keeps
a consistent index, id map and fallback list until it finishes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from artifacts.checksums import MANIFEST_NAME, verify_files
from artifacts.errors import ArtifactError
from serving.errors import IndexLoadError
from serving.index.artifact import IndexManifest
from serving.index.search import is_refined, search_parameters


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

    def search(
        self, queries: np.ndarray, k: int, nprobe: int, *, k_factor: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by inner product. queries: [q, dim] float32 → (scores [q, k], ids [q, k]);
        missing results have id -1. Thread-safe (Faiss search does not mutate the index).

        ``nprobe`` is clamped to 1..nlist. A re-ranked index over-fetches k × ``k_factor``
        IVF-PQ candidates and returns their exact scores (None: the manifest's
        ``refine_factor``; clamped to 1..MAX_REFINE_FACTOR); without re-rank it is ignored.
        """
        params = search_parameters(
            self.index,
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
