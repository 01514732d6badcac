"""Train and fill a Faiss IVF-PQ index (GPU when Faiss sees one, CPU otherwise) and
measure its recall against exact search."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import faiss
import numpy as np

from serving.index.params import IvfPqParams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuiltIndex:
    index: faiss.Index
    device: str  # "cpu" or "gpu"
    device_note: str  # why CPU was used when a GPU was present, else ""
    train_seconds: float
    add_seconds: float


def gpu_count() -> int:
    """Number of GPUs Faiss can use (0 with faiss-cpu)."""
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get else 0


def _build_on(
    vectors: np.ndarray, params: IvfPqParams, use_gpu: bool
) -> tuple[faiss.Index, float, float]:
    index = faiss.index_factory(vectors.shape[1], params.factory, faiss.METRIC_INNER_PRODUCT)
    # Polysemous training (on by default for 8-bit IVF-PQ) only serves Hamming-filtered
    # search, which we do not use, and costs minutes of simulated annealing.
    faiss.downcast_index(faiss.extract_index_ivf(index)).do_polysemous_training = False  # type: ignore[attr-defined]
    target = faiss.index_cpu_to_all_gpus(index) if use_gpu else index
    started = time.perf_counter()
    target.train(vectors)
    trained = time.perf_counter()
    # Internal ids are row numbers; the artifact's id map turns them into external ids.
    target.add_with_ids(vectors, np.arange(len(vectors), dtype=np.int64))
    added = time.perf_counter()
    result = faiss.index_gpu_to_cpu(target) if use_gpu else target
    return result, trained - started, added - trained


def build_ivfpq(vectors: np.ndarray, params: IvfPqParams, *, allow_gpu: bool = True) -> BuiltIndex:
    """Train on all of ``vectors`` ([n, dim] float32, unit norm) and add them with ids 0..n-1.

    The returned index always lives on the CPU (ready to serialise). When a GPU is present
    but the GPU build fails (e.g. an unsupported PQ size), the CPU build is used and the
    reason is kept in ``device_note``.
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    note = ""
    if allow_gpu and gpu_count() > 0:
        try:
            index, t_train, t_add = _build_on(vectors, params, use_gpu=True)
            return BuiltIndex(index, "gpu", "", t_train, t_add)
        except Exception as exc:  # faiss raises RuntimeError with C++ text; fall back
            note = f"GPU build failed, built on CPU instead: {exc}"
            log.warning(note)
    index, t_train, t_add = _build_on(vectors, params, use_gpu=False)
    return BuiltIndex(index, "cpu", note, t_train, t_add)


def ann_recall(
    index: faiss.Index,
    vectors: np.ndarray,
    queries: np.ndarray,
    k: int,
    nprobe: int,
) -> float:
    """Mean |ANN top-k ∩ exact top-k| / k over ``queries`` ([q, dim] float32).

    Exact top-k comes from an IndexFlatIP over the same ``vectors`` (ids = row numbers).
    """
    k = min(k, len(vectors))
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(np.ascontiguousarray(vectors, dtype=np.float32))
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    _, truth = exact.search(queries, k)
    _, found = index.search(queries, k, params=faiss.SearchParametersIVF(nprobe=nprobe))  # type: ignore[call-arg]
    hits = sum(len(set(t) & set(f[f >= 0])) for t, f in zip(truth, found, strict=True))
    return hits / (k * len(queries))
