"""Shared builders for the unit tests: seeded vectors, hand-made model artifacts, index dirs.

The model artifact is written by hand in the layout ``serving.model_artifact`` reads (and
``training.export`` writes), so serving tests never need TensorFlow.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from artifacts.checksums import MANIFEST_NAME, list_files
from serving.index.artifact import write_index_dir
from serving.index.loaded import LoadedIndex, load_index_dir
from serving.index.params import IvfPqParams
from serving.model_artifact import MODEL_SCHEMA, ModelArtifact, open_model_artifact


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as float32."""
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered_vectors(
    n: int, dim: int, *, clusters: int = 20, noise: float = 0.3, seed: int = 0
) -> np.ndarray:
    """[n, dim] unit-norm float32 vectors around ``clusters`` random centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    labels = rng.integers(0, clusters, size=n)
    return unit_rows(centres[labels] + noise * rng.normal(size=(n, dim)))


def write_model_artifact(
    directory: Path,
    *,
    n_items: int = 400,
    n_users: int = 120,
    dim: int = 16,
    model_version: str = "20261123T073012Z-3f9a1c",
    seed: int = 0,
) -> ModelArtifact:
    """Write a complete model artifact (minus the SavedModel) and open it, verified.

    Users and items are drawn from the same clusters, so user vectors are realistic
    queries. Item ids are ``item-<row>``, user ids ``user-<row>``; popularity is
    decreasing in the item row number, so ``item-0`` is the most popular.
    """
    directory.mkdir(parents=True, exist_ok=True)
    both = clustered_vectors(n_items + n_users, dim, seed=seed)
    items, users = both[:n_items], both[n_items:]
    item_ids = [f"item-{i}" for i in range(n_items)]
    user_ids = [f"user-{u}" for u in range(n_users)]
    np.save(directory / "item_vectors.npy", items.astype("<f4"))
    np.save(directory / "user_vectors.npy", users.astype("<f4"))
    (directory / "item_ids.json").write_text(json.dumps(item_ids))
    (directory / "user_ids.json").write_text(json.dumps(user_ids))
    popular = [{"item_id": item_ids[i], "count": 1000 - i} for i in range(min(50, n_items))]
    (directory / "popular_items.json").write_text(json.dumps(popular))
    manifest = {
        "schema_id": MODEL_SCHEMA,
        "model_version": model_version,
        "embedding_dim": dim,
        "files": list_files(directory),
    }
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest))
    return open_model_artifact(directory)


# Small, fast parameters for the hand-made 400 x 16 artifact: 8 lists of ~50 items,
# 8 sub-quantizers of 2 dims with 64 centroids each.
SMALL_PARAMS = IvfPqParams(nlist=8, m=8, nbits=6, nprobe=4)


def write_index(
    model: ModelArtifact,
    out_dir: Path,
    index_version: str = "20261123T080000Z-0a0b0c",
    *,
    params: IvfPqParams | None = SMALL_PARAMS,
    min_recall: float = 0.5,
) -> Path:
    """Build and write an index artifact for ``model`` into ``out_dir`` (created)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_index_dir(
        model, out_dir, index_version, params=params, min_recall=min_recall, allow_gpu=False
    )
    return out_dir


def loaded_index(tmp_path: Path) -> LoadedIndex:
    """A verified LoadedIndex over a fresh hand-made model artifact."""
    model = write_model_artifact(tmp_path / "model")
    return load_index_dir(write_index(model, tmp_path / "index"))
