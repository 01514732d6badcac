"""The index artifact: build from a model artifact, quality-gate, write, publish.

Directory layout (one immutable version in the artifact store, kind ``indexes``)::

    manifest.json        IndexManifest below, with size + SHA-256 of every other file
    index.faiss          faiss.write_index output: IndexRefine(IndexIVFPQ, SQfp16 store), or
                         the bare IndexIVFPQ when built with refine "none"; ids 0..n-1
    item_ids.json        id map: item_ids[internal_id] = external item id
    popular_items.json   [{"item_id", "count"}], most popular first (fallback list)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import tempfile
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from artifacts.checksums import MANIFEST_NAME, FileEntry, list_files
from artifacts.errors import ArtifactError
from artifacts.store import ArtifactStore, new_version
from serving.index.build import (
    ann_recalls,
    build_ivfpq,
    calibrate_nprobe,
    faiss_threads,
    set_default_refine_factor,
    tune_search,
)
from serving.index.params import (
    DEFAULT_MIN_RECALL,
    GATE_KS,
    IvfPqParams,
    RefineKind,
    SearchTuning,
    choose_params,
)
from serving.model_artifact import ModelArtifact

log = logging.getLogger(__name__)

INDEX_KIND = "indexes"
INDEX_SCHEMA = "recall.index/v1"
# Users the gate samples: 500 estimate recall@k within ~0.002 (standard error) and keep the
# exact reference search of a 1M-item gate near 10 s on 2 cores.
GATE_QUERIES = 500


class QualityGateFailed(ArtifactError):
    """The built index's ANN recall is below the required minimum; nothing was published."""


class QualityReport(BaseModel):
    """ANN recall@k against exact search, measured on the served configuration."""

    model_config = ConfigDict(extra="forbid")

    k: int
    nprobe: int
    queries: int
    recall: float
    min_recall: float
    refine_factor: int = 1  # over-fetch of the measured search (1 = no re-rank; old artifacts)


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
    # "params" or "error" when a GPU was present but the IVF-PQ was built on the CPU
    # (counted in recall_index_gpu_fallbacks_total); "" otherwise and in older artifacts.
    gpu_fallback_reason: str = ""
    gpu_float16_lut: bool = False  # the GPU build used float16 PQ lookup tables
    faiss_version: str
    train_seconds: float
    add_seconds: float
    # Exact re-rank (absent in artifacts written before it existed: IVF-PQ scores served).
    refine: RefineKind = "none"
    refine_factor: int = 1
    refine_seconds: float = 0.0
    train_size: int | None = None  # rows of the k-means sample (None: all, older artifacts)
    build_threads: int | None = None
    quality: QualityReport  # the gate at k=10 (readers of the first manifests use this one)
    quality_by_k: list[QualityReport] = Field(default_factory=list)  # every gate figure
    # The search tuner's targets (params.SearchTuning as a dict: target_recall, target_k,
    # margin, refine_factors, queries); None: built without tuning, or an older artifact.
    # The nightly rebuild compares it with today's (serving.tasks.rebuild_reason).
    search_tuning: dict[str, Any] | None = None
    files: list[FileEntry]

    def quality_at(self, k: int) -> QualityReport | None:
        """The gate's figure at ``k`` (older artifacts only have k=10, in ``quality``)."""
        reports = self.quality_by_k or [self.quality]
        return next((q for q in reports if q.k == k), None)


def tuning_record(tuning: SearchTuning | None) -> dict[str, Any] | None:
    """``tuning`` as the manifest records it (JSON types: tuples become lists)."""
    if tuning is None:
        return None
    fields = dataclasses.asdict(tuning)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}


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
    gate_ks: tuple[int, ...] = GATE_KS,
    min_recall: float = DEFAULT_MIN_RECALL,
    allow_gpu: bool = True,
    threads: int | None = None,
    seed: int = 0,
    calibrate: bool = True,
    fast_scan: bool = False,
) -> IndexManifest:
    """Build, measure and write an index artifact into the empty directory ``out_dir``.

    The gate searches exactly as a server will by default (the manifest's nprobe and
    ``params.refine_factor``) at every k of ``gate_ks``, capped at the catalog size. With
    ``calibrate`` the default nprobe is the smallest of ``params.nprobe``, ×2, ×4, …, nlist
    that meets ``min_recall`` (a catalog whose neighbours spread over more lists than the
    heuristic probes gets a wider default instead of a failed gate); without it,
    ``params.nprobe`` as given.

    Raises:
        QualityGateFailed: a measured recall@k (ANN vs exact, on user vectors) < min_recall.
    """
    vectors = model.item_vectors()
    item_ids = model.item_ids()
    if len(item_ids) != len(vectors):
        raise ArtifactError(
            f"{model.path}: {len(item_ids)} item ids but {len(vectors)} item vectors"
        )
    params = params or choose_params(len(vectors), vectors.shape[1], fast_scan=fast_scan)
    built = build_ivfpq(vectors, params, allow_gpu=allow_gpu, threads=threads, seed=seed)
    params = built.params or params  # a GPU build may have fitted another PQ size
    queries = _gate_queries(model, GATE_QUERIES, seed)
    with faiss_threads(threads):
        if calibrate and params.tuning is not None:
            tuned = tune_search(
                built.index, vectors, queries, gate_ks, params, params.tuning, min_recall
            )
            log.info(
                "search tuning: nprobe=%d refine_factor=%d in %.1f s over %d trials%s",
                tuned.chosen.nprobe,
                tuned.chosen.refine_factor,
                tuned.seconds,
                len(tuned.trials),
                "" if tuned.met_targets else f" (targets {tuned.targets} not reached)",
            )
            nprobe, recalls = tuned.chosen.nprobe, list(tuned.recalls)
            params = dataclasses.replace(params, refine_factor=tuned.chosen.refine_factor)
            set_default_refine_factor(built.index, params.refine_factor)
        elif calibrate:
            nprobe, recalls = calibrate_nprobe(
                built.index,
                vectors,
                queries,
                gate_ks,
                params.nprobe,
                params.nlist,
                min_recall,
                params.refine_factor,
            )
        else:
            nprobe = params.nprobe
            recalls = ann_recalls(
                built.index, vectors, queries, gate_ks, nprobe, params.refine_factor
            )
    reports = [
        QualityReport(
            k=min(k, len(vectors)),
            nprobe=nprobe,
            queries=len(queries),
            recall=round(recall, 4),
            min_recall=min_recall,
            refine_factor=params.refine_factor,
        )
        for k, recall in zip(gate_ks, recalls, strict=True)
    ]
    summary = ", ".join(f"recall@{q.k}={q.recall:.4f}" for q in reports)
    log.info("index %s nprobe=%d: %s (min %.2f)", params.factory, nprobe, summary, min_recall)
    if any(q.recall < min_recall for q in reports):
        raise QualityGateFailed(
            f"{params.factory} nprobe={nprobe} refine_factor={params.refine_factor}: "
            f"{summary}, required {min_recall:.4f} over {len(queries)} queries; not published"
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
        nprobe=nprobe,
        dim=int(vectors.shape[1]),
        item_count=len(item_ids),
        build_device=built.device,
        build_note=built.device_note,
        gpu_fallback_reason=built.gpu_fallback_reason,
        gpu_float16_lut=built.float16_lut,
        faiss_version=faiss.__version__,
        train_seconds=round(built.train_seconds, 4),
        add_seconds=round(built.add_seconds, 4),
        refine=params.refine,
        refine_factor=params.refine_factor,
        refine_seconds=round(built.refine_seconds, 4),
        train_size=built.train_size,
        build_threads=built.threads,
        quality=reports[0],
        quality_by_k=reports,
        search_tuning=tuning_record(params.tuning) if calibrate else None,
        files=list_files(out_dir),
    )
    (out_dir / MANIFEST_NAME).write_text(manifest.model_dump_json(indent=2) + "\n")
    return manifest


def publish_index(
    model: ModelArtifact,
    store: ArtifactStore,
    *,
    index_version: str | None = None,
    min_recall: float = DEFAULT_MIN_RECALL,
    allow_gpu: bool = True,
    params: IvfPqParams | None = None,
    threads: int | None = None,
    set_latest: bool = True,
    fast_scan: bool = False,
) -> tuple[str, IndexManifest]:
    """Build an index for ``model`` in a staging directory and publish it atomically
    (``set_latest`` False: published without moving LATEST; a ship promotes it).

    Returns:
        (artifact URI, manifest). On any failure nothing is published and LATEST is unchanged.
    """
    index_version = index_version or new_version()
    with tempfile.TemporaryDirectory(prefix="recall-index-") as tmp:
        manifest = write_index_dir(
            model,
            Path(tmp),
            index_version,
            params=params,
            min_recall=min_recall,
            allow_gpu=allow_gpu,
            threads=threads,
            fast_scan=fast_scan,
        )
        uri = store.publish(INDEX_KIND, index_version, Path(tmp), set_latest=set_latest)
    return uri, manifest
