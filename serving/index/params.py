"""IVF-PQ + exact re-rank parameters chosen from catalog size and vector dimension, and the
index-side defaults every caller imports (CLI, DAG tasks, server, benchmarks)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

from recall_settings import defaults

# Faiss warns below ~39 training points per centroid; keep every list trainable.
MIN_POINTS_PER_LIST = 39
# k-means sample: 64 points per list is enough for stable centroids and keeps a 1M-item
# build on 2 cores within a minute (training on all points costs ~15× more for no recall).
TRAIN_POINTS_PER_LIST = 64
# k-means iterations for the coarse quantizer (Faiss's default is 25; 10 measured the same
# recall on 1M × 64 at 40 % of the training time, bench/README.md).
KMEANS_ITERATIONS = 10
# Probe at least this many items' worth of lists: below a few thousand items a full scan
# costs microseconds, so small catalogs (ML-100K) are searched nearly exhaustively.
MIN_SCANNED_ITEMS = 4096

# Exact re-rank: the IVF-PQ search over-fetches k × refine_factor candidates, which are
# re-scored with the stored vectors. float16 halves the memory of float32 for the same
# measured recall (bench/README.md); "none" serves PQ scores as before.
RefineKind = Literal["none", "fp16", "flat"]
DEFAULT_REFINE: RefineKind = "fp16"
DEFAULT_REFINE_FACTOR = 4
MAX_REFINE_FACTOR = 64  # searches clamp larger factors to this (as nprobe is clamped to nlist)

# Quality gate: ANN recall against exact search at each of these k, on the served
# configuration (default nprobe and refine factor). Every figure must reach the minimum.
GATE_KS = (10, 100)
DEFAULT_MIN_RECALL = defaults.MIN_RECALL.default

# Search tuning at build time (``SearchTuning``): the cheapest served (nprobe, refine
# factor) whose measured recall reaches the gate minimum plus a margin at every gate k, and
# ``DEFAULT_TARGET_RECALL`` at k ≥ TARGET_RECALL_K (issue 6: served recall@100 ≥ 0.97).
DEFAULT_TARGET_RECALL = 0.97
TARGET_RECALL_K = 100
# Above the gate minimum: the tuner and the gate measure the same 500 users, but traffic is
# other users; 0.01 is ~5 standard errors of a 500-query recall@10 estimate.
DEFAULT_TUNE_MARGIN = 0.01
# Over-fetch factors the tuner tries. Re-ranking k × 4 instead of k × 2 costs ~k·2·dim
# float16 multiply-adds, a few % of a probe's list scan, and often saves half the probes.
TUNE_REFINE_FACTORS = (2, 4)
# Stop bisecting the nprobe ladder when the bracket is this tight (relative): finer steps
# save < 12 % of the search and cost two more measurements each.
TUNE_NPROBE_PRECISION = 0.12
# Queries of each tuning trial (evenly spaced rows of the gate's 500): ~15 trials on 500
# took 140 s at 1M × 64 on 2 busy cores; on 200 the standard error of recall@100 is ~0.002,
# and the chosen configuration is then measured on all 500 by the gate.
TUNE_QUERIES = 200


@dataclass(frozen=True)
class SearchTuning:
    """What the build's search tuner aims for (``serving.index.build.tune_search``).

    ``target(k, min_recall)``: recall@k the chosen configuration must measure on the gate's
    sample, ``min_recall + margin`` at every k, and at least ``target_recall`` when
    k ≥ ``target_k``. ``refine_factors``: over-fetch factors tried (ignored without
    re-rank, which has only factor 1). Among the configurations that reach every target
    the one with the smallest ``search_cost`` is served; the gate then measures it against
    ``min_recall`` alone (a build refused only when it is below the minimum).
    """

    target_recall: float = DEFAULT_TARGET_RECALL
    target_k: int = TARGET_RECALL_K
    margin: float = DEFAULT_TUNE_MARGIN
    refine_factors: tuple[int, ...] = TUNE_REFINE_FACTORS
    queries: int = TUNE_QUERIES  # per trial, a subset of the gate's sample

    def __post_init__(self) -> None:
        if not 0 <= self.target_recall <= 1:
            raise ValueError(f"target_recall must be in 0..1, got {self.target_recall}")
        if not 0 <= self.margin < 1:
            raise ValueError(f"margin must be in 0..1, got {self.margin}")
        if self.queries < 1:
            raise ValueError(f"queries must be at least 1, got {self.queries}")
        if not self.refine_factors or not all(
            1 <= f <= MAX_REFINE_FACTOR for f in self.refine_factors
        ):
            raise ValueError(
                f"refine_factors must be non-empty, each in 1..{MAX_REFINE_FACTOR}, "
                f"got {self.refine_factors}"
            )

    def target(self, k: int, min_recall: float) -> float:
        """The recall@k to reach (capped at 1: a minimum of 1 needs exact results)."""
        wanted = min_recall + self.margin if min_recall > 0 else 0.0
        if k >= self.target_k:
            wanted = max(wanted, self.target_recall)
        return min(1.0, wanted)


# 4-bit fast-scan PQ (``PQ{m}x4fs``, opt-in): codes are scanned 32 at a time with the
# lookup table in SIMD registers. Per code and sub-quantizer it measured ~1/9 of an 8-bit
# table lookup (1M × 64: PQ64x4fs nprobe 39 × factor 8 in 250 µs per query against 900 µs
# for PQ32x8 × factor 4, same recall; bench/README.md). Its coarser codes need a deeper
# re-rank, so the tuner tries larger over-fetch factors.
FAST_SCAN_NBITS = 4
FAST_SCAN_CODE_COST = 1 / 8
FAST_SCAN_REFINE_FACTOR = 8
FAST_SCAN_TUNE_REFINE_FACTORS = (4, 8, 16)


def search_cost(
    nprobe: int,
    refine_factor: int,
    k: int,
    *,
    items_per_list: float,
    m: int,
    nbits: int,
    dim: int,
    fast_scan: bool = False,
) -> float:
    """Modelled multiply-adds of one IVF-PQ (+ re-rank) search, used to rank configurations
    (measured times are too noisy on a shared machine): per probed list, its lookup table
    (2^nbits × dim) and the scan of its codes (items_per_list × m, × FAST_SCAN_CODE_COST
    with fast-scan); then the re-rank of k × refine_factor candidates (dim each; none when
    refine_factor is 1)."""
    per_code = m * (FAST_SCAN_CODE_COST if fast_scan else 1.0)
    scan = nprobe * (2**nbits * dim + items_per_list * per_code)
    rerank = k * refine_factor * dim if refine_factor > 1 else 0
    return float(scan + rerank)


@dataclass(frozen=True)
class IvfPqParams:
    """``nlist`` inverted lists, PQ with ``m`` sub-quantizers of ``nbits`` bits each,
    ``nprobe`` lists visited per query by default (a per-call search parameter), and the
    exact re-rank: ``refine`` storage of the item vectors and the default over-fetch
    ``refine_factor`` (also per call); ``tuning``: how the build tunes the last two."""

    nlist: int
    m: int
    nbits: int
    nprobe: int
    refine: RefineKind = DEFAULT_REFINE
    refine_factor: int = DEFAULT_REFINE_FACTOR
    # 4-bit fast-scan PQ codes (``PQ{m}x4fs``, CPU builds only; nbits must be 4).
    fast_scan: bool = False
    # None: serve ``nprobe`` (widened if the gate needs it) and ``refine_factor`` as given;
    # a SearchTuning: the build picks the cheapest nprobe/factor that reaches its targets.
    tuning: SearchTuning | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.refine_factor <= MAX_REFINE_FACTOR:
            raise ValueError(
                f"refine_factor must be in 1..{MAX_REFINE_FACTOR}, got {self.refine_factor}"
            )
        if self.refine == "none" and self.refine_factor != 1:
            raise ValueError("refine_factor must be 1 when refine is 'none'")
        if self.fast_scan and (self.nbits != FAST_SCAN_NBITS or self.m % 2):
            raise ValueError(
                f"fast-scan PQ needs {FAST_SCAN_NBITS}-bit codes and an even m, "
                f"got m={self.m} nbits={self.nbits}"
            )

    @property
    def ivfpq_factory(self) -> str:
        """The IVF-PQ part alone, e.g. ``IVF64,PQ16x8`` (``IVF64,PQ32x4fs`` with fast-scan)."""
        return f"IVF{self.nlist},PQ{self.m}x{self.nbits}" + ("fs" if self.fast_scan else "")

    @property
    def factory(self) -> str:
        """The full Faiss index_factory string, e.g. ``IVF64,PQ16x8,Refine(SQfp16)``."""
        suffix = {"none": "", "fp16": ",Refine(SQfp16)", "flat": ",RFlat"}[self.refine]
        return self.ivfpq_factory + suffix

    def train_size(self, n_items: int) -> int:
        """Rows of the seeded k-means sample (all rows for small catalogs)."""
        return min(n_items, max(self.nlist * TRAIN_POINTS_PER_LIST, 2**self.nbits * 64))


def choose_params(
    n_items: int,
    dim: int,
    *,
    refine: RefineKind = DEFAULT_REFINE,
    refine_factor: int | None = None,
    tuning: SearchTuning | None = SearchTuning(),
    fast_scan: bool = False,
) -> IvfPqParams:
    """Heuristics (see docs/artifacts.md):

    - ``nlist ≈ √n``, capped so each list gets ≥ 39 training points, at least 1 (finer
      lists measured no cheaper search at equal recall, and cost build time);
    - ``m``: the largest divisor of ``dim`` that is ≤ dim/2 and ≤ 64 (2+ dims per code);
    - ``nbits``: 8, or ⌊log2 n⌋ when the catalog is too small to train 256 centroids;
    - ``nprobe``: ``2·√nlist``, raised until the probed lists hold ≥ 4096 items, at most nlist;
    - re-rank: ``refine`` storage, ``refine_factor`` (default 4; 1 without re-rank);
    - ``tuning`` (default: ``SearchTuning()``): the build replaces nprobe and the factor by
      the cheapest measured pair that reaches its targets; None keeps them.
    - ``fast_scan``: 4-bit fast-scan codes of the same size in bytes (twice the
      sub-quantizers: the largest even divisor of ``dim`` ≤ 2m), default factor 8, tuned
      over FAST_SCAN_TUNE_REFINE_FACTORS; ignored below 2^4 × 39 items (too few to train)
      or when ``dim`` has no even divisor.
    """
    if n_items < 2:
        raise ValueError(f"an IVF-PQ index needs at least 2 items, got {n_items}")
    if dim < 2:
        raise ValueError(f"vector dimension must be at least 2, got {dim}")
    nlist = max(1, min(round(math.sqrt(n_items)), n_items // MIN_POINTS_PER_LIST))
    m = max(d for d in range(1, min(dim // 2, 64) + 1) if dim % d == 0)
    nbits = min(8, int(math.log2(n_items)))
    per_list = n_items / nlist
    nprobe = max(round(2 * math.sqrt(nlist)), math.ceil(MIN_SCANNED_ITEMS / per_list))
    nprobe = min(nlist, max(1, nprobe))
    even = [d for d in range(2, min(dim, 2 * m) + 1, 2) if dim % d == 0]
    fast_scan = fast_scan and bool(even) and n_items >= 2**FAST_SCAN_NBITS * MIN_POINTS_PER_LIST
    if fast_scan:
        m = max(even)
        nbits = FAST_SCAN_NBITS
        if tuning is not None and tuning.refine_factors == TUNE_REFINE_FACTORS:
            tuning = dataclasses.replace(tuning, refine_factors=FAST_SCAN_TUNE_REFINE_FACTORS)
    if refine_factor is None:
        default_factor = FAST_SCAN_REFINE_FACTOR if fast_scan else DEFAULT_REFINE_FACTOR
        refine_factor = 1 if refine == "none" else default_factor
    return IvfPqParams(
        nlist=nlist,
        m=m,
        nbits=nbits,
        nprobe=nprobe,
        refine=refine,
        refine_factor=refine_factor,
        fast_scan=fast_scan,
        tuning=tuning,
    )


# --- what Faiss's GPU IVF-PQ accepts (faiss/gpu/GpuIndexIVFPQ.cu, verifyPQSettings_) -------
# Bits per sub-quantizer code: the default (non-interleaved) GPU layout takes 8 only.
GPU_PQ_NBITS = 8
# Sub-quantizer counts (bytes per code at 8 bits) the GPU list-scan kernels implement
# (IVFPQ::isSupportedPQCodeLength). 56, 64 and 96 only fit with float16 lookup tables.
GPU_PQ_M = (1, 2, 3, 4, 8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 96)
# Dimensions per sub-quantizer with a specialised (fast) code-distance kernel; Faiss before
# 1.7 refused any other, later versions compute the rest by matrix multiply, so the plan
# prefers these but accepts others.
GPU_FAST_SUB_DIMS = (1, 2, 3, 4, 6, 8, 10, 12, 16, 20, 24, 28, 32)
# Shared memory per thread block: the per-query lookup table (M × 2^nbits entries of 4
# bytes, 2 with float16) must fit. 48 KiB is every CUDA GPU's default per-block limit.
GPU_SHARED_MEMORY_BYTES = 48 * 1024


@dataclass(frozen=True)
class GpuPlan:
    """How (and whether) an IVF-PQ of ``dim`` dimensions can be built on the GPU.

    ``ok``: the GPU build can run; ``m``: the sub-quantizer count to build with (the
    requested one, or the nearest smaller count the GPU supports); ``use_float16_lut``:
    the lookup tables only fit in shared memory as float16; ``reason``: why the plan
    differs from the request or why the GPU cannot be used ("" when neither).
    """

    ok: bool
    m: int
    use_float16_lut: bool
    reason: str


def gpu_lut_bytes(m: int, nbits: int, float16: bool) -> int:
    """Shared memory of one query's PQ lookup table: m × 2^nbits × (2 or 4) bytes."""
    return m * 2**nbits * (2 if float16 else 4)


def gpu_plan(
    dim: int, m: int, nbits: int, *, shared_memory_bytes: int = GPU_SHARED_MEMORY_BYTES
) -> GpuPlan:
    """Check IVF-PQ parameters against Faiss's GPU limits and pick ones that fit.

    - ``nbits`` must be 8 (catalogs too small for 256 centroids per code build on CPU);
    - ``m`` must be in ``GPU_PQ_M`` and divide ``dim``; otherwise the largest such count
      ≤ ``m`` is chosen, preferring one whose ``dim / m`` is in ``GPU_FAST_SUB_DIMS``;
    - the lookup table (``gpu_lut_bytes``) must fit ``shared_memory_bytes``: float32 when it
      does, float16 when only that does, else not ok.

    A pure function of its arguments (no Faiss, no GPU needed), so the choice is unit-tested.
    """
    if nbits != GPU_PQ_NBITS:
        return GpuPlan(
            False,
            m,
            False,
            f"GPU IVF-PQ needs {GPU_PQ_NBITS} bits per code, these parameters have {nbits} "
            "(catalog too small for 256 centroids per sub-quantizer)",
        )
    fitting = [c for c in GPU_PQ_M if c <= m and dim % c == 0]
    fitting = [c for c in fitting if gpu_lut_bytes(c, nbits, True) <= shared_memory_bytes]
    if not fitting:
        return GpuPlan(False, m, False, f"no GPU-supported PQ size divides dim {dim}")
    fast = [c for c in fitting if dim // c in GPU_FAST_SUB_DIMS]
    chosen = max(fast or fitting)
    reason = ""
    if chosen != m:
        reason = (
            f"PQ{m} is not supported by GPU IVF-PQ at dim {dim} "
            f"(sub-quantizers must divide dim and be one of {', '.join(map(str, GPU_PQ_M))}); "
            f"using PQ{chosen}"
        )
    float16 = gpu_lut_bytes(chosen, nbits, False) > shared_memory_bytes
    return GpuPlan(True, chosen, float16, reason)
