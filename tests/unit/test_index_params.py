"""serving.index.params.choose_params: IVF-PQ parameters that Faiss can train."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import faiss
import pytest

from serving.index.params import (
    DEFAULT_MIN_RECALL,
    DEFAULT_REFINE_FACTOR,
    DEFAULT_TARGET_RECALL,
    GATE_KS,
    GPU_PQ_M,
    GPU_SHARED_MEMORY_BYTES,
    MAX_REFINE_FACTOR,
    MIN_POINTS_PER_LIST,
    TRAIN_POINTS_PER_LIST,
    GpuPlan,
    IvfPqParams,
    RefineKind,
    SearchTuning,
    choose_params,
    gpu_lut_bytes,
    gpu_plan,
    search_cost,
)
from serving.index.search import is_refined

SIZES = [2, 3, 10, 38, 39, 40, 77, 78, 100, 255, 256, 257, 1_000, 2_000, 10_000, 1_682, 10**6]
DIMS = [2, 3, 7, 8, 16, 32, 48, 64, 100, 128, 130, 256, 1024]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dim", DIMS)
def test_choose_params_invariants(n: int, dim: int) -> None:
    p = choose_params(n, dim)
    assert 1 <= p.nlist <= max(1, n // MIN_POINTS_PER_LIST)
    assert 1 <= p.m <= 64
    assert dim % p.m == 0
    assert p.m <= max(1, dim // 2)
    assert 1 <= p.nbits <= 8
    assert 2**p.nbits <= n
    assert 1 <= p.nprobe <= p.nlist
    assert p.ivfpq_factory == f"IVF{p.nlist},PQ{p.m}x{p.nbits}"
    assert p.factory == p.ivfpq_factory + ",Refine(SQfp16)"
    assert re.fullmatch(r"IVF\d+,PQ\d+x\d+", p.ivfpq_factory)
    assert (p.refine, p.refine_factor) == ("fp16", DEFAULT_REFINE_FACTOR)
    assert MIN_POINTS_PER_LIST * p.nlist <= p.train_size(n) or p.train_size(n) == n


@pytest.mark.parametrize(
    ("n", "dim", "expected"),
    [
        (2, 2, IvfPqParams(nlist=1, m=1, nbits=1, nprobe=1)),
        (100, 16, IvfPqParams(nlist=2, m=8, nbits=6, nprobe=2)),
        # Small catalogs: every list probed (fewer than MIN_SCANNED_ITEMS items in all).
        (2_000, 32, IvfPqParams(nlist=45, m=16, nbits=8, nprobe=45)),
        (1_682, 64, IvfPqParams(nlist=41, m=32, nbits=8, nprobe=41)),
        # 100k: 2·√nlist = 36 lists hold ~11k items.
        (100_000, 64, IvfPqParams(nlist=316, m=32, nbits=8, nprobe=36)),
        (10**6, 256, IvfPqParams(nlist=1000, m=64, nbits=8, nprobe=63)),
        (10**6, 7, IvfPqParams(nlist=1000, m=1, nbits=8, nprobe=63)),
    ],
)
def test_choose_params_known_values(n: int, dim: int, expected: IvfPqParams) -> None:
    assert choose_params(n, dim) == replace(expected, tuning=SearchTuning())


def test_nbits_is_eight_once_catalog_can_train_256_centroids() -> None:
    assert choose_params(255, 8).nbits == 7
    assert choose_params(256, 8).nbits == 8
    assert choose_params(10**7, 8).nbits == 8


def test_m_is_largest_divisor_up_to_half_dim() -> None:
    assert choose_params(1000, 48).m == 24
    assert choose_params(1000, 130).m == 26  # 65 would exceed the cap of 64
    assert choose_params(1000, 7).m == 1  # prime dim: one sub-quantizer


def test_factory_string_format() -> None:
    params = IvfPqParams(nlist=64, m=16, nbits=8, nprobe=16)
    assert params.ivfpq_factory == "IVF64,PQ16x8"
    assert params.factory == "IVF64,PQ16x8,Refine(SQfp16)"
    assert replace(params, refine="flat").factory == "IVF64,PQ16x8,RFlat"
    assert replace(params, refine="none", refine_factor=1).factory == "IVF64,PQ16x8"


@pytest.mark.parametrize("refine", ["fp16", "flat", "none"])
def test_factory_string_builds_the_same_index_shape(refine: RefineKind) -> None:
    """The recorded factory string is one Faiss itself understands."""
    params = choose_params(10_000, 16, refine=refine)
    index = faiss.index_factory(16, params.factory, faiss.METRIC_INNER_PRODUCT)
    assert is_refined(index) == (refine != "none")


def test_refine_defaults_and_bounds() -> None:
    assert choose_params(1000, 16).refine_factor == DEFAULT_REFINE_FACTOR == 4
    assert choose_params(1000, 16, refine="none").refine_factor == 1
    assert choose_params(1000, 16, refine_factor=8).refine_factor == 8
    assert 0.9 <= DEFAULT_MIN_RECALL < 1 and GATE_KS == (10, 100)
    with pytest.raises(ValueError, match="refine_factor"):
        IvfPqParams(nlist=4, m=2, nbits=4, nprobe=2, refine_factor=0)
    with pytest.raises(ValueError, match="refine_factor"):
        IvfPqParams(nlist=4, m=2, nbits=4, nprobe=2, refine_factor=MAX_REFINE_FACTOR + 1)
    with pytest.raises(ValueError, match="'none'"):
        IvfPqParams(nlist=4, m=2, nbits=4, nprobe=2, refine="none", refine_factor=4)


def test_train_sample_is_bounded_for_large_catalogs() -> None:
    params = choose_params(10**6, 64)
    assert params.train_size(10**6) == params.nlist * TRAIN_POINTS_PER_LIST == 64_000
    assert choose_params(5000, 64).train_size(5000) == 5000


@pytest.mark.parametrize("n", [-5, 0, 1])
def test_rejects_fewer_than_two_items(n: int) -> None:
    with pytest.raises(ValueError, match="at least 2 items"):
        choose_params(n, 32)


@pytest.mark.parametrize("dim", [-1, 0, 1])
def test_rejects_dim_below_two(dim: int) -> None:
    with pytest.raises(ValueError, match="dimension"):
        choose_params(1000, dim)


# --- GPU IVF-PQ limits (serving.index.params.gpu_plan) -------------------------------------


@pytest.mark.parametrize(
    ("dim", "ok", "m", "float16", "refit"),
    [
        (32, True, 16, False, False),  # PQ16: 16 KiB float32 lookup tables
        (64, True, 32, False, False),  # PQ32: 32 KiB, fits 48 KiB of shared memory
        (100, True, 20, False, True),  # PQ50 is not a GPU size: PQ20 (5 dims each)
        (128, True, 64, True, False),  # PQ64: 64 KiB float32 > 48 KiB, 32 KiB as float16
        (256, True, 64, True, False),
    ],
)
def test_gpu_plan_for_the_chosen_params(
    dim: int, ok: bool, m: int, float16: bool, refit: bool
) -> None:
    chosen = choose_params(100_000, dim)
    plan = gpu_plan(dim, chosen.m, chosen.nbits)
    assert (plan.ok, plan.m, plan.use_float16_lut) == (ok, m, float16)
    assert (plan.reason != "") == refit
    assert plan.m in GPU_PQ_M and dim % plan.m == 0
    assert gpu_lut_bytes(plan.m, 8, plan.use_float16_lut) <= GPU_SHARED_MEMORY_BYTES


def test_chosen_m_at_dim_100_is_unsupported_on_gpu() -> None:
    """What the issue reports: dim 100 gives PQ50, which GPU IVF-PQ does not implement."""
    assert choose_params(100_000, 100).m == 50 and 50 not in GPU_PQ_M
    assert "PQ50 is not supported" in gpu_plan(100, 50, 8).reason


def test_gpu_plan_needs_8_bits_per_code() -> None:
    plan = gpu_plan(32, 16, 6)
    assert not plan.ok and "8 bits per code" in plan.reason


def test_gpu_plan_prefers_fast_sub_dimensions_and_falls_back_on_shared_memory() -> None:
    # dim 96, m 48: 2 dims each, in the fast set, 48 KiB float32 fits exactly.
    assert gpu_plan(96, 48, 8) == GpuPlan(True, 48, False, "")
    # A smaller device limit forces float16, then a smaller PQ.
    assert gpu_plan(96, 48, 8, shared_memory_bytes=32 * 1024).use_float16_lut
    small = gpu_plan(96, 48, 8, shared_memory_bytes=16 * 1024)
    assert (small.ok, small.m, small.use_float16_lut) == (True, 32, True)
    # Only PQ1 divides a prime dimension.
    assert gpu_plan(97, 48, 8).m == 1


def test_gpu_plan_without_any_fit() -> None:
    plan = gpu_plan(64, 32, 8, shared_memory_bytes=256)
    assert not plan.ok and "no GPU-supported PQ size" in plan.reason


# --- search tuning targets and cost model -------------------------------------------------


def test_tuning_targets_are_the_gate_minimum_plus_margin_and_the_recall_at_100_goal() -> None:
    tuning = SearchTuning()
    assert DEFAULT_TARGET_RECALL == 0.97
    assert tuning.target(10, 0.95) == pytest.approx(0.96)
    assert tuning.target(100, 0.95) == pytest.approx(0.97)
    assert tuning.target(100, 0.99) == pytest.approx(1.0)  # capped: 0.99 + 0.01
    # min_recall 0 (measure only): no target at k=10, the k=100 goal still holds
    assert tuning.target(10, 0.0) == 0.0 and tuning.target(100, 0.0) == 0.97
    custom = SearchTuning(target_recall=0.9, target_k=50, margin=0.02)
    assert custom.target(50, 0.8) == pytest.approx(0.9)
    assert custom.target(10, 0.8) == pytest.approx(0.82)


@pytest.mark.parametrize(
    "bad",
    [{"target_recall": 1.5}, {"margin": -0.1}, {"refine_factors": ()}, {"refine_factors": (0,)}],
)
def test_tuning_refuses_nonsense(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SearchTuning(**bad)  # type: ignore[arg-type]


def test_default_params_are_tuned_and_explicit_ones_are_not() -> None:
    assert choose_params(10**6, 64).tuning == SearchTuning()
    assert choose_params(10**6, 64, tuning=None).tuning is None
    assert IvfPqParams(nlist=4, m=2, nbits=4, nprobe=2).tuning is None


def test_search_cost_grows_with_nprobe_and_the_rerank_is_cheap_beside_a_probe() -> None:
    shape: dict[str, Any] = {"items_per_list": 1000.0, "m": 32, "nbits": 8, "dim": 64}
    assert search_cost(32, 4, 100, **shape) < search_cost(63, 2, 100, **shape)
    assert search_cost(31, 4, 100, **shape) < search_cost(32, 4, 100, **shape)
    assert search_cost(8, 4, 100, **shape) > search_cost(8, 2, 100, **shape)
    probe = search_cost(1, 1, 100, **shape)
    assert search_cost(1, 4, 100, **shape) - probe < probe  # 400 x 64 < one list's scan
