"""A served index without training: a model artifact of seeded clustered unit vectors (the
documented layout, schema recall.model/v1), its IVF-PQ index built and published with the
pipeline's code, and its user vectors loaded into a Redis. Seconds instead of a pipeline
run; used by the serving-path tests and scripts/recall_load.py."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import redis

from artifacts.checksums import MANIFEST_NAME, list_files
from artifacts.store import ArtifactStore
from serving.index.artifact import IndexManifest, publish_index
from serving.model_artifact import MODEL_SCHEMA, ModelArtifact, open_model_artifact
from serving.user_vectors import load_user_vectors

MODEL_VERSION = "20260101T000000Z-synth0"


def clustered_unit_vectors(n: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    """[n, dim] float32 unit vectors around ``clusters`` random centres (like trained
    embeddings: neighbours exist and IVF lists are uneven)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    points = centres[rng.integers(0, clusters, n)] + 0.35 * rng.normal(size=(n, dim))
    points = points.astype(np.float32)
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def write_vector_model(out: Path, n_users: int, n_items: int, dim: int) -> None:
    out.mkdir(parents=True)
    np.save(out / "user_vectors.npy", clustered_unit_vectors(n_users, dim, 64, seed=1))
    np.save(out / "item_vectors.npy", clustered_unit_vectors(n_items, dim, 64, seed=0))
    (out / "user_ids.json").write_text(json.dumps([f"u{i}" for i in range(n_users)]))
    (out / "item_ids.json").write_text(json.dumps([f"i{i}" for i in range(n_items)]))
    popular = [{"item_id": f"i{i}", "count": 1000 - i} for i in range(min(n_items, 1000))]
    (out / "popular_items.json").write_text(json.dumps(popular))
    manifest = {
        "schema_id": MODEL_SCHEMA,
        "model_version": out.name,
        "embedding_dim": dim,
        "files": list_files(out),
    }
    (out / MANIFEST_NAME).write_text(json.dumps(manifest))


@dataclass
class SyntheticIndex:
    artifact_root: Path
    model: ModelArtifact
    index: IndexManifest

    @property
    def user_ids(self) -> list[str]:
        return self.model.user_ids()


def publish_synthetic(
    workdir: Path,
    redis_url: str,
    *,
    users: int = 943,
    items: int = 1682,
    dim: int = 32,
    fast_scan: bool = False,
) -> SyntheticIndex:
    """ML-100K-sized by default (943 users, 1,682 items, 32-d); ``fast_scan``: 4-bit
    fast-scan PQ codes (``serving.index.params.choose_params``)."""
    root = workdir / "artifacts"
    staging = workdir / "staging" / MODEL_VERSION
    write_vector_model(staging, users, items, dim)
    store = ArtifactStore(root)
    store.publish("models", MODEL_VERSION, staging)
    model = open_model_artifact(store.local_dir("models", MODEL_VERSION))
    _, manifest = publish_index(model, store, min_recall=0.0, allow_gpu=False, fast_scan=fast_scan)
    client = redis.Redis.from_url(redis_url)
    try:
        load_user_vectors(model, client)
    finally:
        client.close()
    return SyntheticIndex(root, model, manifest)
