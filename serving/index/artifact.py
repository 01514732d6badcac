"""The index artifact: build from a model artifact, quality-gate, write, publish.

Directory layout (one immutable version in the artifact store, kind ``indexes``)::

    manifest.json        IndexManifest below, with size + SHA-256 of every other file
    index.faiss          faiss.write_index output; internal ids 0..n-1
    item_ids.json        id map: item_ids[internal_id] = external item id
    popular_items.json   [{"item_id", "count"}], most popular first (fallback list)
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import tempfile
from pathlib import Path
from typing import Literal

import faiss
import numpy as np
from pydantic import BaseModel, ConfigDict

from artifacts.checksums import MANIFEST_NAME, FileEntry, list_files
from artifacts.errors import ArtifactError
from artifacts.store import ArtifactStore, new_version
from serving.index.build import ann_recall, build_ivfpq
from serving.index.params import IvfPqParams, choose_params
from serving.model_artifact import ModelArtifact

log = logging.getLogger(__name__)

INDEX_KIND = "indexes"
INDEX_SCHEMA = "recall.index/v1"
GATE_QUERIES = 1000


class QualityGateFailed(ArtifactError):
    """The built index's ANN recall is below the required minimum; nothing was published."""


class QualityReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    k: int
    nprobe: int
    queries: int
    recall: float
    min_recall: float


class IndexManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_id: Literal["recall.index/v1"] = "recall.index/v1"
    index_version: str
    model_version: str
    created_at: str
    factory: str
    nlist: int
    pq_m: int
    pq_nbits: int
    nprobe: int
    metric: Literal["inner_product"] = "inner_product"
    dim: int
    item_count: int
    build_device: str
    build_note: str
    faiss_version: str
    train_seconds: float
    add_seconds: float
    quality: QualityReport
    files: list[FileEntry]


def _gate_queries(model: ModelArtifact, limit: int, seed: int) -> np.ndarray:
    """Up to ``limit`` user vectors, sampled without replacement: the queries real traffic sends."""
    users = model.user_vectors()
    if len(users) == 0:  # no users: items are the best stand-in for real queries
        users = model.item_vectors()
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(users), size=min(limit, len(users)), replace=False))
    return np.asarray(users[rows], dtype=np.float32)


def write_index_dir(
    model: ModelArtifact,
    out_dir: Path,
    index_version: str,
    *,
    params: IvfPqParams | None = None,
    gate_k: int = 10,
    min_recall: float = 0.8,
    allow_gpu: bool = True,
    seed: int = 0,
) -> IndexManifest:
    """Build, measure and write an index artifact into the empty directory ``out_dir``.

    Raises:
        QualityGateFailed: measured recall@gate_k (ANN vs exact, on user vectors) < min_recall.
    """
    vectors = model.item_vectors()
    item_ids = model.item_ids()
    if len(item_ids) != len(vectors):
        raise ArtifactError(
            f"{model.path}: {len(item_ids)} item ids but {len(vectors)} item vectors"
        )
    params = params or choose_params(len(vectors), vectors.shape[1])
    built = build_ivfpq(vectors, params, allow_gpu=allow_gpu)
    queries = _gate_queries(model, GATE_QUERIES, seed)
    recall = ann_recall(built.index, vectors, queries, gate_k, params.nprobe)
    quality = QualityReport(
        k=min(gate_k, len(vectors)),
        nprobe=params.nprobe,
        queries=len(queries),
        recall=round(recall, 4),
        min_recall=min_recall,
    )
    log.info("index %s: recall@%d=%.4f (min %.2f)", params.factory, quality.k, recall, min_recall)
    if recall < min_recall:
        raise QualityGateFailed(
            f"{params.factory} nprobe={params.nprobe}: recall@{quality.k} {recall:.4f} "
            f"< required {min_recall:.4f} over {len(queries)} queries; not published"
        )
    faiss.write_index(built.index, str(out_dir / "index.faiss"))
    (out_dir / "item_ids.json").write_text(json.dumps(item_ids, ensure_ascii=False) + "\n")
    (out_dir / "popular_items.json").write_text(
        json.dumps(model.popular_items(), ensure_ascii=False) + "\n"
    )
    manifest = IndexManifest(
        index_version=index_version,
        model_version=model.model_version,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        factory=params.factory,
        nlist=params.nlist,
        pq_m=params.m,
        pq_nbits=params.nbits,
        nprobe=params.nprobe,
        dim=int(vectors.shape[1]),
        item_count=len(item_ids),
        build_device=built.device,
        build_note=built.device_note,
        faiss_version=faiss.__version__,
        train_seconds=round(built.train_seconds, 4),
        add_seconds=round(built.add_seconds, 4),
        quality=quality,
        files=list_files(out_dir),
    )
    (out_dir / MANIFEST_NAME).write_text(manifest.model_dump_json(indent=2) + "\n")
    return manifest


def publish_index(
    model: ModelArtifact,
    store: ArtifactStore,
    *,
    index_version: str | None = None,
    min_recall: float = 0.8,
    allow_gpu: bool = True,
) -> tuple[str, IndexManifest]:
    """Build an index for ``model`` in a staging directory and publish it atomically.

    Returns:
        (artifact URI, manifest). On any failure nothing is published and LATEST is unchanged.
    """
    index_version = index_version or new_version()
    with tempfile.TemporaryDirectory(prefix="recall-index-") as tmp:
        manifest = write_index_dir(
            model, Path(tmp), index_version, min_recall=min_recall, allow_gpu=allow_gpu
        )
        uri = store.publish(INDEX_KIND, index_version, Path(tmp))
    return uri, manifest
