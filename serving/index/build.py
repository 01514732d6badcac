"""Train and fill a Faiss IVF-PQ index (GPU when Faiss sees one, CPU otherwise), wrap it
with the exact re-rank stage (on the CPU), and measure its recall against exact search."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import faiss
import numpy as np

from serving.index.build_metrics import GPU_FALLBACKS, GpuFallbackReason
from serving.index.params import (
    KMEANS_ITERATIONS,
    MAX_REFINE_FACTOR,
    TUNE_NPROBE_PRECISION,
    IvfPqParams,
    SearchTuning,
    gpu_plan,
    search_cost,
)
from serving.index.search import search_parameters

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuiltIndex:
    index: faiss.Index  # IndexIVFPQ, wrapped in an IndexRefine unless params.refine == "none"
    device: str  # "cpu" or "gpu": where the IVF-PQ was trained and filled
    device_note: str  # why CPU was used when a GPU was present, or how params were fitted
    train_seconds: float
    add_seconds: float
    refine_seconds: float = 0.0  # copying the vectors into the re-rank store (CPU)
    train_size: int = 0  # rows of the k-means sample
    threads: int = 0  # Faiss OpenMP threads used for the build
    # The parameters actually built: the requested ones, or the GPU-fitted ones (another
    # PQ size when the requested one does not fit Faiss's GPU IVF-PQ). None: as requested.
    params: IvfPqParams | None = None
    gpu_fallback_reason: str = ""  # "params" or "error" when a GPU was present but unused
    float16_lut: bool = False  # the GPU build used float16 lookup tables


def gpu_count() -> int:
    """Number of GPUs Faiss can use (0 with faiss-cpu)."""
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get else 0


@contextlib.contextmanager
def faiss_threads(threads: int | None) -> Iterator[int]:
    """Run the block with ``threads`` OpenMP threads (None: one per CPU), then restore."""
    before = faiss.omp_get_max_threads()
    wanted = max(1, threads or os.cpu_count() or 1)
    faiss.omp_set_num_threads(wanted)
    try:
        yield wanted
    finally:
        faiss.omp_set_num_threads(before)


def train_sample(vectors: np.ndarray, size: int, seed: int) -> np.ndarray:
    """``size`` rows of ``vectors`` ([n, dim]) sampled without replacement (seeded), in order."""
    if size >= len(vectors):
        return vectors
    rows = np.sort(np.random.default_rng(seed).choice(len(vectors), size=size, replace=False))
    return np.ascontiguousarray(vectors[rows])


def _to_gpus(index: faiss.Index, float16_lut: bool) -> faiss.Index:
    """Clone ``index`` onto every visible GPU, with float16 PQ lookup tables if asked."""
    options = faiss.GpuMultipleClonerOptions()
    options.useFloat16LookupTables = float16_lut  # type: ignore[attr-defined]
    return faiss.index_cpu_to_all_gpus(index, options)


def _build_on(
    vectors: np.ndarray,
    params: IvfPqParams,
    use_gpu: bool,
    seed: int,
    float16_lut: bool = False,
) -> tuple[faiss.Index, float, float]:
    index = faiss.index_factory(vectors.shape[1], params.ivfpq_factory, faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    if not params.fast_scan:
        # Polysemous training (on by default for 8-bit IVF-PQ) only serves Hamming-filtered
        # search, which we do not use, and costs minutes of simulated annealing.
        ivf.do_polysemous_training = False  # type: ignore[attr-defined]
    ivf.cp.niter = KMEANS_ITERATIONS  # type: ignore[attr-defined]
    ivf.cp.seed = seed  # type: ignore[attr-defined]
    # The PQ codebooks too: with the exact re-rank behind it, 10 iterations lose no recall
    # and cut their training (32 k-means of 256 centroids at 1M × 64) by 60 %.
    ivf.pq.cp.niter = KMEANS_ITERATIONS  # type: ignore[attr-defined]
    ivf.pq.cp.seed = seed  # type: ignore[attr-defined]
    target = _to_gpus(index, float16_lut) if use_gpu else index
    started = time.perf_counter()
    target.train(train_sample(vectors, params.train_size(len(vectors)), seed))
    trained = time.perf_counter()
    # Internal ids are row numbers; the artifact's id map turns them into external ids, and
    # the re-rank store relies on them (row i of the store is internal id i).
    target.add_with_ids(vectors, np.arange(len(vectors), dtype=np.int64))
    added = time.perf_counter()
    result = faiss.index_gpu_to_cpu(target) if use_gpu else target
    return result, trained - started, added - trained


def with_refine(base: faiss.Index, vectors: np.ndarray, params: IvfPqParams) -> faiss.Index:
    """Wrap the filled ``base`` (ids = row numbers of ``vectors``) with the exact re-rank
    stage: an ``IndexRefine`` whose refine index stores ``vectors`` as float16 (SQfp16) or
    float32 (IndexFlat), and whose default over-fetch is ``params.refine_factor``."""
    if params.refine == "none":
        return base
    dim = vectors.shape[1]
    store: faiss.Index
    if params.refine == "fp16":
        store = faiss.IndexScalarQuantizer(
            dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
        )
    else:
        store = faiss.IndexFlatIP(dim)
    store.add(vectors)
    refined = faiss.IndexRefine(base, store)
    refined.k_factor = float(params.refine_factor)
    # The wrapper owns both parts once written and read back; here Python keeps them alive.
    return refined


def build_ivfpq(
    vectors: np.ndarray,
    params: IvfPqParams,
    *,
    allow_gpu: bool = True,
    threads: int | None = None,
    seed: int = 0,
) -> BuiltIndex:
    """Train on a seeded sample of ``vectors`` ([n, dim] float32, unit norm), add them all
    with ids 0..n-1, then add the re-rank store on the CPU.

    ``threads``: Faiss OpenMP threads for the build (None: one per CPU); restored after.
    The returned index always lives on the CPU (ready to serialise). With a GPU present the
    parameters are first checked against Faiss's GPU IVF-PQ limits (``gpu_plan``): an
    unsupported PQ size is replaced by the nearest supported one, float16 lookup tables are
    used where float32 ones do not fit, and parameters that cannot fit (fewer than 8 bits
    per code) build on the CPU. A CPU build despite a GPU (unfit parameters, or a GPU build
    that raised) counts in ``recall_index_gpu_fallbacks_total`` and says why in
    ``device_note``; ``params`` of the result are the ones actually built.
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    note = ""
    fallback: GpuFallbackReason | None = None
    float16_lut = False
    with faiss_threads(threads) as used:
        built: tuple[faiss.Index, float, float] | None = None
        device = "cpu"
        if params.fast_scan:
            # Asked for, not a fallback: Faiss's GPU IVF-PQ has no fast-scan layout.
            note = "fast-scan PQ is built on the CPU (no GPU layout for it in Faiss)"
        elif allow_gpu and gpu_count() > 0:
            plan = gpu_plan(vectors.shape[1], params.m, params.nbits)
            if not plan.ok:
                fallback = "params"
                note = f"GPU not used, built on CPU: {plan.reason}"
            else:
                gpu_params = dataclasses.replace(params, m=plan.m)
                try:
                    built = _build_on(
                        vectors,
                        gpu_params,
                        use_gpu=True,
                        seed=seed,
                        float16_lut=plan.use_float16_lut,
                    )
                    device, params, note = "gpu", gpu_params, plan.reason
                    float16_lut = plan.use_float16_lut
                except Exception as exc:  # faiss raises RuntimeError with C++ text; fall back
                    fallback = "error"
                    note = f"GPU build failed, built on CPU instead: {exc}"
            if fallback is not None:
                GPU_FALLBACKS.labels(reason=fallback).inc()
                log.warning(note)
            elif note:
                log.info(note)
        if built is None:
            built = _build_on(vectors, params, use_gpu=False, seed=seed)
        base, t_train, t_add = built
        started = time.perf_counter()
        index = with_refine(base, vectors, params)
        t_refine = time.perf_counter() - started
    return BuiltIndex(
        index,
        device,
        note,
        t_train,
        t_add,
        refine_seconds=t_refine,
        train_size=params.train_size(len(vectors)),
        threads=used,
        params=params,
        gpu_fallback_reason=fallback or "",
        float16_lut=float16_lut,
    )


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Ids [q, min(k, n)] of the exact inner-product top-k (IndexFlatIP; ids = row numbers)."""
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(np.ascontiguousarray(vectors, dtype=np.float32))
    _, truth = exact.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, len(vectors)))
    return np.asarray(truth)


def recall_against(truth: np.ndarray, found: np.ndarray, k: int) -> float:
    """Mean |found[:, :k] ∩ truth[:, :k]| / k; ids < 0 (missing results) never count."""
    hits = sum(len(set(t[:k]) & set(f[:k][f[:k] >= 0])) for t, f in zip(truth, found, strict=True))
    return hits / (k * len(truth))


def ann_recall(
    index: faiss.Index,
    vectors: np.ndarray,
    queries: np.ndarray,
    k: int,
    nprobe: int,
    k_factor: int | None = None,
) -> float:
    """Mean |ANN top-k ∩ exact top-k| / k over ``queries`` ([q, dim] float32), searching
    ``index`` with ``nprobe`` and, for a re-ranked index, ``k_factor`` (None: its default).

    Exact top-k comes from an IndexFlatIP over the same ``vectors`` (ids = row numbers).
    """
    return ann_recalls(index, vectors, queries, [k], nprobe, k_factor)[0]


def ann_recalls(
    index: faiss.Index,
    vectors: np.ndarray,
    queries: np.ndarray,
    ks: Sequence[int],
    nprobe: int,
    k_factor: int | None = None,
    *,
    truth: np.ndarray | None = None,
) -> list[float]:
    """``ann_recall`` at each k of ``ks`` (capped at the catalog size), with one exact search
    (or the given ``truth``: exact ids [q, ≥ max k]).

    Each k is its own ANN search, as a server would run it: with re-rank the over-fetch is
    k × k_factor, so the top-10 of a k=100 search is not what a k=10 request gets.
    """
    ks = [min(k, len(vectors)) for k in ks]
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if truth is None:
        truth = exact_top_k(vectors, queries, max(ks))
    params = search_parameters(index, nprobe, k_factor)
    recalls = []
    for k in ks:
        _, found = index.search(queries, k, params=params)
        recalls.append(recall_against(truth, found, k))
    return recalls


def calibrate_nprobe(
    index: faiss.Index,
    vectors: np.ndarray,
    queries: np.ndarray,
    ks: Sequence[int],
    nprobe: int,
    nlist: int,
    min_recall: float,
    k_factor: int | None = None,
) -> tuple[int, list[float]]:
    """The smallest nprobe of ``nprobe``, 2·nprobe, 4·nprobe, …, ``nlist`` whose recall at
    every k of ``ks`` reaches ``min_recall``, with those recalls; ``nlist`` and its recalls
    when none does. The exact top-k is computed once for the whole ladder.
    """
    truth = exact_top_k(vectors, queries, max(min(k, len(vectors)) for k in ks))
    candidate = max(1, min(nprobe, nlist))
    while True:
        recalls = ann_recalls(index, vectors, queries, ks, candidate, k_factor, truth=truth)
        if min(recalls) >= min_recall or candidate >= nlist:
            return candidate, recalls
        candidate = min(nlist, candidate * 2)


@dataclass(frozen=True)
class SearchTrial:
    """One measured configuration: ``recalls`` at each gate k (same order), ``cost`` from
    ``search_cost`` at the largest k, ``ms_per_query`` measured (batched, informational)."""

    nprobe: int
    refine_factor: int
    recalls: tuple[float, ...]
    cost: float
    ms_per_query: float

    def meets(self, targets: Sequence[float]) -> bool:
        return all(r >= t for r, t in zip(self.recalls, targets, strict=True))


@dataclass(frozen=True)
class TunedSearch:
    """The tuner's answer: ``chosen`` is served; ``recalls`` are its recall@k on the whole
    query sample (the gate's figures; ``chosen.recalls`` are on the tuning subset);
    ``met_targets`` False when no trial reached every target (then ``chosen`` is the most
    accurate trial and the gate decides); ``trials`` in the order measured; ``seconds`` of
    wall time, exact search and gate measurement included."""

    chosen: SearchTrial
    recalls: tuple[float, ...]
    targets: tuple[float, ...]
    met_targets: bool
    trials: tuple[SearchTrial, ...]
    seconds: float


def tune_search(
    index: faiss.Index,
    vectors: np.ndarray,
    queries: np.ndarray,
    ks: Sequence[int],
    params: IvfPqParams,
    tuning: SearchTuning,
    min_recall: float,
) -> TunedSearch:
    """The cheapest (nprobe, refine factor) whose recall@k against exact search reaches
    ``tuning.target(k, min_recall)`` at every k of ``ks`` (capped at the catalog size),
    measured on ``tuning.queries`` evenly spaced rows of ``queries`` ([q, dim]); the chosen
    pair is then measured on all of ``queries`` (``recalls``: what the gate judges).

    The largest factor of ``tuning.refine_factors`` (1 alone without re-rank) climbs nprobe
    1, 2, 4, … (and ``params.nprobe``, the heuristic) up to nlist until the targets are met
    (if even nlist misses, the factor doubles up to MAX_REFINE_FACTOR until one passes at
    nlist), then bisects the bracket between the last miss and that hit to
    TUNE_NPROBE_PRECISION:
    recall grows with nprobe, so the smallest passing nprobe is found in O(log nlist)
    searches, cheapest first. A smaller factor never passes at a smaller nprobe (it
    re-ranks a subset of the same candidates), so each is tried once, at that nprobe, and
    served if it passes there (``search_cost`` is then lower). The exact top-k is computed
    once.
    """
    started = time.perf_counter()
    ks = [min(k, len(vectors)) for k in ks]
    targets = tuple(tuning.target(k, min_recall) for k in ks)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    truth = exact_top_k(vectors, queries, max(ks))
    rows = np.unique(
        np.linspace(0, len(queries) - 1, min(tuning.queries, len(queries))).astype(int)
    )
    sample, sample_truth = queries[rows], truth[rows]
    nlist = params.nlist
    factors = sorted(set(tuning.refine_factors), reverse=True) if params.refine != "none" else [1]
    trials: list[SearchTrial] = []

    def trial(nprobe: int, factor: int) -> SearchTrial:
        search_params = search_parameters(index, nprobe, factor)
        recalls = []
        took = 0.0
        for k in ks:
            t0 = time.perf_counter()
            _, found = index.search(sample, k, params=search_params)
            took = time.perf_counter() - t0  # the largest k's search is the one kept
            recalls.append(recall_against(sample_truth, found, k))
        cost = search_cost(
            nprobe,
            factor,
            max(ks),
            items_per_list=len(vectors) / nlist,
            m=params.m,
            nbits=params.nbits,
            dim=vectors.shape[1],
            fast_scan=params.fast_scan,
        )
        result = SearchTrial(nprobe, factor, tuple(recalls), cost, took * 1e3 / len(sample))
        trials.append(result)
        return result

    ladder = sorted({min(nlist, 2**i) for i in range(nlist.bit_length() + 1)} | {params.nprobe})
    ladder = [n for n in ladder if 1 <= n <= nlist]

    def bisect(miss: int, hit: SearchTrial) -> SearchTrial:
        """The smallest passing nprobe of ``hit``'s factor above the failing ``miss``."""
        while hit.nprobe - miss > max(1, TUNE_NPROBE_PRECISION * hit.nprobe):
            middle = trial((miss + hit.nprobe) // 2, hit.refine_factor)
            if middle.meets(targets):
                hit = middle
            else:
                miss = middle.nprobe
        return hit

    miss, hit = 0, None
    for nprobe in ladder:
        measured = trial(nprobe, factors[0])
        if measured.meets(targets):
            hit = bisect(miss, measured)
            break
        miss = nprobe
    deeper = factors[0] * 2
    while hit is None and factors[0] > 1 and deeper <= MAX_REFINE_FACTOR:
        # Every list probed and the re-rank still misses: the PQ codes rank these vectors
        # too coarsely (sparse, high-dimensional ones do), so deepen the re-rank, doubling,
        # and serve the first depth that passes, at its smallest nprobe.
        widest = trial(nlist, deeper)
        if widest.meets(targets):
            hit = bisect(0, widest)
            factors = [deeper]  # every smaller factor missed even at nlist
        deeper *= 2
    if hit is not None:
        for factor in factors[1:]:
            smaller = trial(hit.nprobe, factor)
            if smaller.meets(targets) and smaller.cost < hit.cost:
                hit = smaller
        chosen = hit
    else:  # nothing reaches the targets: the most accurate, cheapest first; the gate decides

        def slack(t: SearchTrial) -> tuple[float, float]:
            return (min(r - g for r, g in zip(t.recalls, targets, strict=True)), -t.cost)

        chosen = max(trials, key=slack)
    gate = ann_recalls(
        index, vectors, queries, ks, chosen.nprobe, chosen.refine_factor, truth=truth
    )
    return TunedSearch(
        chosen,
        tuple(gate),
        targets,
        hit is not None,
        tuple(trials),
        time.perf_counter() - started,
    )


def set_default_refine_factor(index: faiss.Index, factor: int) -> None:
    """Make ``factor`` the re-ranked ``index``'s own default over-fetch (written with it),
    so a reader without the manifest searches as the server does; no-op without re-rank."""
    if isinstance(index, faiss.IndexRefine):
        index.k_factor = float(factor)
