"""Exact re-rank (IndexRefine over IVF-PQ) and the quality gate on the served configuration.

Accuracy is checked the Faiss way: seeded synthetic vectors, IndexFlatIP ground truth, a
tolerance. The PQ here is deliberately coarse (8 dimensions per code) so that PQ scores
alone lose neighbours and the re-rank has something to win back. Queries are drawn with the
items (same clusters, fresh noise), like user vectors of the same model.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import faiss
import numpy as np
import pytest

from artifacts.checksums import MANIFEST_NAME
from serving.errors import IndexLoadError
from serving.index.artifact import QualityGateFailed, write_index_dir
from serving.index.build import (
    ann_recall,
    ann_recalls,
    build_ivfpq,
    calibrate_nprobe,
    exact_top_k,
    recall_against,
)
from serving.index.loaded import load_index_dir
from serving.index.params import MAX_REFINE_FACTOR, IvfPqParams
from serving.index.search import is_refined, search_parameters
from tests.unit.helpers import clustered_vectors, write_model_artifact

N, DIM = 5000, 32
COARSE = IvfPqParams(nlist=16, m=8, nbits=8, nprobe=16, refine="none", refine_factor=1)
BOTH = clustered_vectors(N + 200, DIM, clusters=100, noise=0.5, seed=0)


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return BOTH[:N]


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return BOTH[N:]


def test_rerank_raises_recall_on_a_small_index(vectors: np.ndarray, queries: np.ndarray) -> None:
    plain = build_ivfpq(vectors, COARSE, allow_gpu=False, threads=1)
    refined = build_ivfpq(
        vectors, replace(COARSE, refine="fp16", refine_factor=8), allow_gpu=False, threads=1
    )
    assert not is_refined(plain.index) and is_refined(refined.index)
    for k in (10, 100):
        before = ann_recall(plain.index, vectors, queries, k, nprobe=COARSE.nlist)
        after = ann_recall(refined.index, vectors, queries, k, nprobe=COARSE.nlist)
        assert before < 0.9, before  # PQ with 4 dims per code loses neighbours...
        assert after >= 0.97, after  # ...that re-scoring 8·k candidates finds again
        assert after > before + 0.1


def test_flat_and_fp16_stores_agree_with_exact_scores(
    vectors: np.ndarray, queries: np.ndarray
) -> None:
    truth = exact_top_k(vectors, queries, 10)
    for refine, tolerance in (("flat", 1e-5), ("fp16", 2e-3)):
        params = replace(COARSE, refine=refine, refine_factor=8)  # type: ignore[arg-type]
        built = build_ivfpq(vectors, params, allow_gpu=False, threads=1)
        search = search_parameters(built.index, COARSE.nlist)
        scores, ids = built.index.search(queries, 10, params=search)
        # Returned scores are the stored vectors' inner products, not PQ approximations.
        exact = np.einsum("qd,qkd->qk", queries, vectors[ids])
        np.testing.assert_allclose(scores, exact, atol=tolerance)
        assert recall_against(truth, ids, 10) >= 0.95


def test_k_factor_is_per_call_and_never_mutates_the_index(
    vectors: np.ndarray, queries: np.ndarray
) -> None:
    built = build_ivfpq(vectors, replace(COARSE, refine="fp16", refine_factor=4), threads=1)
    assert built.index.k_factor == 4  # type: ignore[attr-defined]
    recalls = [
        ann_recall(built.index, vectors, queries, 10, COARSE.nlist, k_factor=f)
        for f in (1, 2, 8, 32)
    ]
    assert recalls == sorted(recalls) and recalls[-1] - recalls[0] > 0.1, recalls
    assert built.index.k_factor == 4  # type: ignore[attr-defined]  # unchanged by searches
    # None keeps the index default; out-of-range factors are clamped, not errors.
    default = ann_recall(built.index, vectors, queries, 10, COARSE.nlist)
    assert default == ann_recall(built.index, vectors, queries, 10, COARSE.nlist, k_factor=4)
    assert search_parameters(built.index, 4, 0).k_factor == 1  # type: ignore[attr-defined]
    big = search_parameters(built.index, 4, 10_000)
    assert big.k_factor == MAX_REFINE_FACTOR  # type: ignore[attr-defined]


def test_ann_recalls_measures_each_k_as_its_own_search(
    vectors: np.ndarray, queries: np.ndarray
) -> None:
    built = build_ivfpq(vectors, replace(COARSE, refine="fp16", refine_factor=2), threads=1)
    at10, at100 = ann_recalls(built.index, vectors, queries, (10, 100), COARSE.nlist)
    assert at10 == ann_recall(built.index, vectors, queries, 10, COARSE.nlist)
    assert at100 == ann_recall(built.index, vectors, queries, 100, COARSE.nlist)


def test_calibration_picks_the_smallest_nprobe_that_meets_the_minimum(
    vectors: np.ndarray, queries: np.ndarray
) -> None:
    built = build_ivfpq(vectors, replace(COARSE, refine="fp16", refine_factor=8), threads=1)
    nprobe, recalls = calibrate_nprobe(built.index, vectors, queries, (10, 100), 1, 16, 0.95)
    assert nprobe in (2, 4, 8, 16) and min(recalls) >= 0.95
    below = ann_recalls(built.index, vectors, queries, (10, 100), nprobe // 2)
    assert min(below) < 0.95  # one rung lower would not do
    # Unreachable minimum: the whole ladder is tried, nlist comes back with its figures.
    nprobe, recalls = calibrate_nprobe(built.index, vectors, queries, (10,), 1, 16, 1.01)
    assert nprobe == 16 and recalls == ann_recalls(built.index, vectors, queries, (10,), 16)


# --- the gate and the manifest ----------------------------------------------------------

SMALL = IvfPqParams(nlist=8, m=2, nbits=6, nprobe=8, refine="none", refine_factor=1)


def test_gate_fails_without_rerank_and_passes_with_it(tmp_path: Path) -> None:
    model = write_model_artifact(tmp_path / "model")
    out = tmp_path / "plain"
    out.mkdir()
    with pytest.raises(QualityGateFailed, match=r"recall@10=.*recall@100=.*required 0\.9500"):
        write_index_dir(model, out, "v1", params=SMALL, allow_gpu=False)
    assert list(out.iterdir()) == []

    out = tmp_path / "refined"
    out.mkdir()
    manifest = write_index_dir(
        model, out, "v1", params=replace(SMALL, refine="fp16", refine_factor=16), allow_gpu=False
    )
    assert [(q.k, q.min_recall, q.refine_factor) for q in manifest.quality_by_k] == [
        (10, 0.95, 16),
        (100, 0.95, 16),
    ]
    assert all(q.recall >= 0.95 for q in manifest.quality_by_k)
    assert manifest.factory == "IVF8,PQ2x6,Refine(SQfp16)"
    loaded = load_index_dir(out)
    assert is_refined(loaded.index) and loaded.index.k_factor == 16  # type: ignore[attr-defined]


def test_manifest_records_the_calibrated_nprobe(tmp_path: Path) -> None:
    model = write_model_artifact(tmp_path / "model")
    out = tmp_path / "index"
    out.mkdir()
    params = replace(SMALL, m=8, nprobe=1, refine="fp16", refine_factor=8)
    manifest = write_index_dir(model, out, "v1", params=params, allow_gpu=False)
    assert manifest.nprobe > 1 and all(q.nprobe == manifest.nprobe for q in manifest.quality_by_k)
    assert all(q.recall >= 0.95 for q in manifest.quality_by_k)
    out = tmp_path / "fixed"
    out.mkdir()
    fixed = write_index_dir(
        model, out, "v1", params=params, min_recall=0.0, allow_gpu=False, calibrate=False
    )
    assert fixed.nprobe == 1


def test_gate_k_is_capped_at_catalog_size(tmp_path: Path) -> None:
    model = write_model_artifact(tmp_path / "model", n_items=60, n_users=10)
    out = tmp_path / "index"
    out.mkdir()
    params = IvfPqParams(nlist=1, m=8, nbits=5, nprobe=1)
    manifest = write_index_dir(model, out, "v1", params=params, min_recall=0.0, allow_gpu=False)
    assert [q.k for q in manifest.quality_by_k] == [10, 60]


def test_loaded_search_uses_the_manifest_factor_unless_told(tmp_path: Path) -> None:
    model = write_model_artifact(tmp_path / "model")
    out = tmp_path / "index"
    out.mkdir()
    params = replace(SMALL, refine="flat", refine_factor=1)
    write_index_dir(model, out, "v1", params=params, min_recall=0.0, allow_gpu=False)
    loaded = load_index_dir(out)
    queries = model.user_vectors()
    truth = exact_top_k(model.item_vectors(), queries, 10)
    _, default_ids = loaded.search(queries, 10, SMALL.nlist)
    _, wide_ids = loaded.search(queries, 10, SMALL.nlist, k_factor=20)
    assert recall_against(truth, wide_ids, 10) > recall_against(truth, default_ids, 10)
    assert loaded.index.k_factor == 1  # type: ignore[attr-defined]


def test_manifest_written_before_rerank_still_loads(tmp_path: Path) -> None:
    model = write_model_artifact(tmp_path / "model")
    out = tmp_path / "index"
    out.mkdir()
    write_index_dir(model, out, "v1", params=SMALL, min_recall=0.0, allow_gpu=False)
    doc = json.loads((out / MANIFEST_NAME).read_text())
    for new in ("refine", "refine_factor", "refine_seconds", "train_size", "build_threads"):
        del doc[new]
    del doc["quality_by_k"]
    del doc["quality"]["refine_factor"]
    (out / MANIFEST_NAME).write_text(json.dumps(doc))
    loaded = load_index_dir(out)
    assert (loaded.manifest.refine, loaded.manifest.refine_factor) == ("none", 1)
    assert loaded.manifest.quality_at(10) == loaded.manifest.quality
    assert loaded.manifest.quality_at(100) is None
    _, ids = loaded.search(model.user_vectors()[:3], 5, SMALL.nlist, k_factor=8)
    assert (ids >= 0).all()


def test_manifest_and_index_shape_must_agree(tmp_path: Path) -> None:
    model = write_model_artifact(tmp_path / "model")
    out = tmp_path / "index"
    out.mkdir()
    params = replace(SMALL, refine="fp16", refine_factor=4)
    write_index_dir(model, out, "v1", params=params, min_recall=0.0, allow_gpu=False)
    doc = json.loads((out / MANIFEST_NAME).read_text())
    doc["refine"], doc["refine_factor"] = "none", 1
    (out / MANIFEST_NAME).write_text(json.dumps(doc))
    with pytest.raises(IndexLoadError, match="refine='none'"):
        load_index_dir(out)


def test_gpu_build_wraps_the_rerank_on_cpu(
    monkeypatch: pytest.MonkeyPatch, vectors: np.ndarray
) -> None:
    """The IVF-PQ goes to the GPU and back; the re-rank store is added after, on the CPU."""
    moved: list[str] = []
    monkeypatch.setattr("serving.index.build.gpu_count", lambda: 1)

    class ClonerOptions:
        """Stand-in for faiss.GpuMultipleClonerOptions (absent from faiss-cpu)."""

        useFloat16LookupTables = False

    monkeypatch.setattr(faiss, "GpuMultipleClonerOptions", ClonerOptions, raising=False)

    def to(index: faiss.Index, options: object = None) -> faiss.Index:
        assert not is_refined(index)
        moved.append("to")
        return index

    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", to, raising=False)

    def back(index: faiss.Index) -> faiss.Index:
        assert not is_refined(index)
        moved.append("back")
        return index

    monkeypatch.setattr(faiss, "index_gpu_to_cpu", back, raising=False)
    result = build_ivfpq(vectors, replace(COARSE, refine="fp16", refine_factor=4))
    assert (result.device, moved) == ("gpu", ["to", "back"])
    assert is_refined(result.index) and result.index.ntotal == N
