"""Building a real IVF-PQ index (faiss-cpu), writing the index artifact from a hand-made
model artifact, and loading it back verified."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest

from artifacts.checksums import MANIFEST_NAME, verify_files
from artifacts.errors import ArtifactError, ChecksumMismatch, InvalidArtifact
from serving.errors import IndexLoadError
from serving.index.artifact import (
    INDEX_SCHEMA,
    IndexManifest,
    QualityGateFailed,
    publish_index,
    write_index_dir,
)
from serving.index.build import (
    BuiltIndex,
    SearchTrial,
    ann_recall,
    ann_recalls,
    build_ivfpq,
    gpu_count,
    tune_search,
)
from serving.index.build_metrics import gpu_fallbacks
from serving.index.loaded import load_index_dir
from serving.index.params import (
    DEFAULT_REFINE_FACTOR,
    GATE_KS,
    IvfPqParams,
    SearchTuning,
    choose_params,
)
from serving.index.search import search_parameters
from serving.model_artifact import open_model_artifact
from tests.unit.helpers import (
    SMALL_PARAMS,
    clustered_vectors,
    write_index,
    write_model_artifact,
)

N, DIM = 2000, 32


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return clustered_vectors(N, DIM, seed=0)


@pytest.fixture(scope="module")
def built(vectors: np.ndarray) -> BuiltIndex:
    return build_ivfpq(vectors, choose_params(N, DIM), allow_gpu=False)


class _ClonerOptions:
    """Stand-in for faiss.GpuMultipleClonerOptions (absent from faiss-cpu)."""

    useFloat16LookupTables = False


def _fake_gpu(
    monkeypatch: pytest.MonkeyPatch, to_gpu: Callable[[faiss.Index, Any], faiss.Index]
) -> list[str]:
    """Pretend Faiss sees one GPU; ``to_gpu`` stands in for index_cpu_to_all_gpus."""
    moved: list[str] = []
    monkeypatch.setattr("serving.index.build.gpu_count", lambda: 1)
    monkeypatch.setattr(faiss, "GpuMultipleClonerOptions", _ClonerOptions, raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", to_gpu, raising=False)
    monkeypatch.setattr(
        faiss, "index_gpu_to_cpu", lambda i: _record(moved, "back", i), raising=False
    )
    return moved


def _record(log: list[Any], entry: Any, index: faiss.Index) -> faiss.Index:
    log.append(entry)
    return index


def test_gpu_build_is_used_when_faiss_sees_a_gpu(
    monkeypatch: pytest.MonkeyPatch, vectors: np.ndarray
) -> None:
    """The GPU path's wiring, with identity stand-ins for the CPU↔GPU copies."""
    options: list[bool] = []
    moved = _fake_gpu(monkeypatch, lambda i, o: _record(options, o.useFloat16LookupTables, i))
    params = choose_params(N, DIM)  # PQ16x8: fits the GPU with float32 lookup tables
    before = gpu_fallbacks("params") + gpu_fallbacks("error")
    result = build_ivfpq(vectors, params)
    assert (result.device, result.device_note, moved, options) == ("gpu", "", ["back"], [False])
    assert result.index.ntotal == len(vectors)
    assert result.params == params and result.gpu_fallback_reason == ""
    assert gpu_fallbacks("params") + gpu_fallbacks("error") == before


def test_gpu_build_fits_the_pq_size_and_uses_float16_tables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """dim 128 → PQ64x8: 64 KiB of float32 lookup tables, so float16 ones on the GPU."""
    options: list[bool] = []
    _fake_gpu(monkeypatch, lambda i, o: _record(options, o.useFloat16LookupTables, i))
    wide = clustered_vectors(600, 128, seed=4)
    result = build_ivfpq(wide, choose_params(600, 128))
    assert (result.device, options, result.float16_lut) == ("gpu", [True], True)


def test_unsupported_pq_size_is_refitted_for_the_gpu(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """dim 100 → PQ50, not a GPU size: the GPU builds PQ20 and the manifest says so."""
    _fake_gpu(monkeypatch, lambda i, o: i)
    odd = clustered_vectors(600, 100, seed=5)
    params = choose_params(600, 100)
    assert params.m == 50
    result = build_ivfpq(odd, params)
    assert result.device == "gpu" and result.params is not None and result.params.m == 20
    assert "PQ50 is not supported" in result.device_note
    assert faiss.downcast_index(faiss.extract_index_ivf(result.index)).pq.M == 20  # type: ignore[attr-defined]


def test_params_unfit_for_the_gpu_build_on_cpu_and_count(
    monkeypatch: pytest.MonkeyPatch, vectors: np.ndarray, tmp_path: Path
) -> None:
    def forbidden(index: faiss.Index, options: Any) -> faiss.Index:
        raise AssertionError("GPU used for 6-bit codes")

    _fake_gpu(monkeypatch, forbidden)
    before = gpu_fallbacks("params")
    result = build_ivfpq(vectors, SMALL_PARAMS)  # 6 bits per code: CPU only
    assert (result.device, result.gpu_fallback_reason) == ("cpu", "params")
    assert "8 bits per code" in result.device_note
    assert gpu_fallbacks("params") == before + 1

    model = write_model_artifact(tmp_path / "model")
    out = tmp_path / "index"
    out.mkdir()
    manifest = write_index_dir(model, out, "v1", params=SMALL_PARAMS, min_recall=0.0)
    assert (manifest.build_device, manifest.gpu_fallback_reason) == ("cpu", "params")
    assert "8 bits per code" in manifest.build_note


def test_failed_gpu_build_falls_back_to_cpu_and_says_why(
    monkeypatch: pytest.MonkeyPatch, vectors: np.ndarray
) -> None:
    def no_cuda(index: faiss.Index, options: Any) -> faiss.Index:
        raise RuntimeError("CUDA error: no kernel image is available")

    _fake_gpu(monkeypatch, no_cuda)
    before = gpu_fallbacks("error")
    result = build_ivfpq(vectors, choose_params(N, DIM))
    assert result.device == "cpu" and result.gpu_fallback_reason == "error"
    assert "GPU build failed" in result.device_note and "no kernel image" in result.device_note
    assert result.index.ntotal == len(vectors)
    assert gpu_fallbacks("error") == before + 1


def test_allow_gpu_false_never_touches_the_gpu(
    monkeypatch: pytest.MonkeyPatch, vectors: np.ndarray
) -> None:
    def forbidden(index: faiss.Index) -> faiss.Index:
        raise AssertionError("GPU used although allow_gpu=False")

    monkeypatch.setattr("serving.index.build.gpu_count", lambda: 1)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", forbidden, raising=False)
    result = build_ivfpq(vectors, SMALL_PARAMS, allow_gpu=False)
    assert (result.device, result.gpu_fallback_reason) == ("cpu", "")


@pytest.mark.skipif(gpu_count() == 0, reason="needs faiss-gpu and a GPU (`make gpu`)")
def test_real_gpu_build_matches_cpu_recall(vectors: np.ndarray, built: BuiltIndex) -> None:
    params = choose_params(N, DIM)
    on_gpu = build_ivfpq(vectors, params)
    assert on_gpu.device == "gpu", on_gpu.device_note
    queries = vectors[:200]
    cpu_recall = ann_recall(built.index, vectors, queries, 10, params.nlist)
    gpu_recall = ann_recall(on_gpu.index, vectors, queries, 10, params.nlist)
    assert gpu_recall >= cpu_recall - 0.05


def test_build_ivfpq_on_cpu(built: BuiltIndex, vectors: np.ndarray) -> None:
    params = choose_params(N, DIM)
    assert built.device == "cpu"
    assert built.device_note == ""
    assert built.index.ntotal == N
    assert built.index.is_trained
    ivf = faiss.extract_index_ivf(built.index)
    assert ivf.nlist == params.nlist
    assert built.index.metric_type == faiss.METRIC_INNER_PRODUCT
    assert built.train_seconds >= 0 and built.add_seconds >= 0
    # Internal ids are row numbers: each vector's own row is its best match.
    search = search_parameters(built.index, ivf.nlist)
    _, ids = built.index.search(vectors[:50], 1, params=search)
    assert (ids[:, 0] == np.arange(50)).mean() >= 0.9
    # The re-rank store holds every vector once, row i = internal id i.
    assert built.index.refine_index.ntotal == N  # type: ignore[attr-defined]
    assert 0 < built.train_size <= N and built.threads >= 1


def test_ann_recall_is_high_with_all_lists_probed(built: BuiltIndex, vectors: np.ndarray) -> None:
    queries = clustered_vectors(300, DIM, seed=1)  # fresh queries, other clusters' noise
    nlist = choose_params(N, DIM).nlist
    assert ann_recall(built.index, vectors, queries, 10, nlist) >= 0.7


def test_ann_recall_does_not_decrease_with_nprobe(built: BuiltIndex, vectors: np.ndarray) -> None:
    queries = vectors[::10]
    nlist = choose_params(N, DIM).nlist
    recalls = [ann_recall(built.index, vectors, queries, 10, p) for p in (1, 2, 4, 8, 16, nlist)]
    assert all(a <= b + 1e-9 for a, b in itertools.pairwise(recalls)), recalls
    assert recalls[-1] > recalls[0]  # probing one list of 51 must miss neighbours


def test_ann_recall_of_exact_index_is_one(vectors: np.ndarray) -> None:
    """An IVF with one list and exact (flat) storage is exact: recall must be 1.0."""
    exact_ivf = faiss.index_factory(DIM, "IVF1,Flat", faiss.METRIC_INNER_PRODUCT)
    exact_ivf.train(vectors)
    exact_ivf.add(vectors)
    assert ann_recall(exact_ivf, vectors, vectors[:100], 10, 1) == pytest.approx(1.0)


def test_ann_recall_caps_k_at_catalog_size() -> None:
    small = clustered_vectors(20, 8, seed=3)
    index = faiss.index_factory(8, "IVF1,Flat", faiss.METRIC_INNER_PRODUCT)
    index.train(small)
    index.add(small)
    assert ann_recall(index, small, small[:5], 100, 1) == pytest.approx(1.0)


# --- the index artifact -------------------------------------------------------------------


def test_write_index_dir_and_load(tmp_path: Path) -> None:
    model = write_model_artifact(tmp_path / "model")
    out = tmp_path / "index"
    out.mkdir()

    manifest = write_index_dir(
        model,
        out,
        "20261123T080000Z-0a0b0c",
        params=SMALL_PARAMS,
        min_recall=0.5,
        allow_gpu=False,
    )

    assert sorted(p.name for p in out.iterdir()) == [
        "index.faiss",
        "item_ids.json",
        MANIFEST_NAME,
        "popular_items.json",
    ]
    on_disk = json.loads((out / MANIFEST_NAME).read_text())
    assert on_disk["schema_id"] == INDEX_SCHEMA == "recall.index/v1"
    assert IndexManifest.model_validate(on_disk) == manifest
    assert manifest.model_version == model.model_version
    assert manifest.index_version == "20261123T080000Z-0a0b0c"
    assert manifest.factory == SMALL_PARAMS.factory
    assert (manifest.nlist, manifest.pq_m, manifest.pq_nbits, manifest.nprobe) == (8, 8, 6, 4)
    assert manifest.dim == 16 and manifest.item_count == 400
    assert manifest.build_device == "cpu"
    assert manifest.quality.k == 10 and manifest.quality.queries == 120
    assert 0.5 <= manifest.quality.recall <= 1.0
    assert [q.k for q in manifest.quality_by_k] == list(GATE_KS) == [10, 100]
    assert manifest.quality_by_k[0] == manifest.quality == manifest.quality_at(10)
    assert all(q.refine_factor == DEFAULT_REFINE_FACTOR for q in manifest.quality_by_k)
    assert all(q.nprobe == SMALL_PARAMS.nprobe for q in manifest.quality_by_k)
    assert (manifest.refine, manifest.refine_factor) == ("fp16", DEFAULT_REFINE_FACTOR)
    assert manifest.train_size == 400 and manifest.build_threads
    assert [f["path"] for f in manifest.files] == [
        "index.faiss",
        "item_ids.json",
        "popular_items.json",
    ]
    verify_files(out, manifest.files)

    loaded = load_index_dir(out)
    assert loaded.index_version == "20261123T080000Z-0a0b0c"
    assert loaded.model_version == model.model_version
    assert loaded.item_count == 400
    assert loaded.item_ids == model.item_ids()
    assert loaded.internal_ids["item-7"] == 7
    assert loaded.popular[0][0] == "item-0"
    assert sum(share for _, share in loaded.popular) == pytest.approx(1.0)
    assert [s for _, s in loaded.popular] == sorted((s for _, s in loaded.popular), reverse=True)

    # Internal ids are row numbers: an item vector as query finds its own row near the top.
    items = model.item_vectors()
    scores, ids = loaded.search(items[:50], 5, nprobe=SMALL_PARAMS.nlist)
    assert ids.shape == (50, 5) and scores.shape == (50, 5)
    assert (ids >= 0).all()
    assert (ids == np.arange(50)[:, None]).any(axis=1).mean() >= 0.9
    assert all(list(row) == sorted(row, reverse=True) for row in scores)
    assert {loaded.item_ids[i] for i in ids.ravel()} <= set(model.item_ids())


def test_default_params_come_from_choose_params(tmp_path: Path) -> None:
    model = write_model_artifact(tmp_path / "model", n_items=300, n_users=40)
    out = tmp_path / "index"
    out.mkdir()
    manifest = write_index_dir(model, out, "v1", params=None, min_recall=0.0, allow_gpu=False)
    assert manifest.factory == choose_params(300, 16).factory


def test_search_nprobe_is_clamped_to_nlist(tmp_path: Path) -> None:
    model = write_model_artifact(tmp_path / "model")
    loaded = load_index_dir(write_index(model, tmp_path / "index"))
    items = model.item_vectors()[:10]
    wide = loaded.search(items, 5, nprobe=10_000)
    full = loaded.search(items, 5, nprobe=SMALL_PARAMS.nlist)
    zero = loaded.search(items, 5, nprobe=0)
    one = loaded.search(items, 5, nprobe=1)
    np.testing.assert_array_equal(wide[1], full[1])
    np.testing.assert_array_equal(zero[1], one[1])


@pytest.mark.parametrize("target", ["index.faiss", "item_ids.json", "popular_items.json"])
def test_tampered_file_fails_to_load(tmp_path: Path, target: str) -> None:
    model = write_model_artifact(tmp_path / "model")
    out = write_index(model, tmp_path / "index")
    raw = bytearray((out / target).read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (out / target).write_bytes(bytes(raw))
    with pytest.raises(IndexLoadError, match="failed verification: " + target.replace(".", r"\.")):
        load_index_dir(out)


def test_missing_or_garbled_manifest_fails_to_load(tmp_path: Path) -> None:
    model = write_model_artifact(tmp_path / "model")
    out = write_index(model, tmp_path / "index")
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    manifest["unexpected"] = 1
    (out / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(IndexLoadError):
        load_index_dir(out)
    (out / MANIFEST_NAME).unlink()
    with pytest.raises(IndexLoadError):
        load_index_dir(out)


def test_inconsistent_item_count_fails_to_load(tmp_path: Path) -> None:
    model = write_model_artifact(tmp_path / "model")
    out = write_index(model, tmp_path / "index")
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    manifest["item_count"] = 399
    (out / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(IndexLoadError, match="399"):
        load_index_dir(out)


def test_quality_gate_failure_writes_nothing(tmp_path: Path) -> None:
    model = write_model_artifact(tmp_path / "model")
    out = tmp_path / "index"
    out.mkdir()
    with pytest.raises(QualityGateFailed, match="not published"):
        write_index_dir(model, out, "v1", params=SMALL_PARAMS, min_recall=1.01, allow_gpu=False)
    assert list(out.iterdir()) == []
    assert issubclass(QualityGateFailed, ArtifactError)


def test_publish_index_gate_failure_publishes_nothing(tmp_path: Path) -> None:
    from artifacts.store import ArtifactStore

    model = write_model_artifact(tmp_path / "model", n_items=300, n_users=40)
    store = ArtifactStore(tmp_path / "store")
    with pytest.raises(QualityGateFailed):
        publish_index(model, store, index_version="v1", min_recall=1.01, allow_gpu=False)
    assert store.versions("indexes") == []

    uri, manifest = publish_index(model, store, index_version="v2", min_recall=0.0, allow_gpu=False)
    assert store.latest("indexes") == "v2"
    assert load_index_dir(store.local_dir("indexes", "v2")).manifest == manifest
    assert uri == store.uri("indexes", "v2")


def test_mismatched_ids_and_vectors_are_rejected(tmp_path: Path) -> None:
    model = write_model_artifact(tmp_path / "model")
    (tmp_path / "model" / "item_ids.json").write_text(json.dumps(["only-one"]))
    out = tmp_path / "index"
    out.mkdir()
    with pytest.raises(ArtifactError, match="item ids"):
        write_index_dir(model, out, "v1", params=SMALL_PARAMS, allow_gpu=False)


# --- the model artifact, as serving reads it ----------------------------------------------


def test_open_model_artifact_reads_the_documented_layout(tmp_path: Path) -> None:
    model = write_model_artifact(tmp_path / "model", n_items=30, n_users=5, dim=4)
    assert model.model_version == "20261123T073012Z-3f9a1c"
    assert model.embedding_dim == 4
    assert model.item_ids()[:2] == ["item-0", "item-1"]
    assert model.item_vectors().shape == (30, 4) and model.item_vectors().dtype == np.float32
    assert model.user_vectors().shape == (5, 4)
    assert model.popular_items()[0] == {"item_id": "item-0", "count": 1000}


def test_open_model_artifact_rejects_tampering_and_wrong_schema(tmp_path: Path) -> None:
    d = tmp_path / "model"
    write_model_artifact(d, n_items=30, n_users=5, dim=4)
    (d / "user_ids.json").write_text('["someone-else"]')
    with pytest.raises(ChecksumMismatch):
        open_model_artifact(d)
    assert open_model_artifact(d, verify=False).user_ids() == ["someone-else"]

    manifest = json.loads((d / MANIFEST_NAME).read_text())
    manifest["schema_id"] = "recall.model/v2"
    (d / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(InvalidArtifact, match="schema"):
        open_model_artifact(d, verify=False)
    (d / MANIFEST_NAME).unlink()
    with pytest.raises(InvalidArtifact):
        open_model_artifact(d)


# --- search tuning ------------------------------------------------------------------------


def test_tuner_picks_a_smaller_nprobe_than_the_heuristic_when_it_suffices(
    built: BuiltIndex, vectors: np.ndarray
) -> None:
    params = choose_params(N, DIM)
    assert params.nprobe == params.nlist  # 2,000 items: the heuristic probes every list
    queries = clustered_vectors(200, DIM, seed=5)
    tuned = tune_search(built.index, vectors, queries, GATE_KS, params, SearchTuning(), 0.95)
    chosen = tuned.chosen
    assert tuned.met_targets and tuned.targets == pytest.approx((0.96, 0.97))
    assert chosen.nprobe < params.nprobe
    assert chosen.meets(tuned.targets)
    assert chosen.refine_factor in SearchTuning().refine_factors
    # the smallest passing nprobe of its factor, and the cheapest of every passing trial
    for trial in tuned.trials:
        if trial.refine_factor == chosen.refine_factor and trial.nprobe < chosen.nprobe:
            assert not trial.meets(tuned.targets)
        if trial.meets(tuned.targets):
            assert chosen.cost <= trial.cost
    # what it reports is what the served configuration measures
    again = ann_recalls(built.index, vectors, queries, GATE_KS, chosen.nprobe, chosen.refine_factor)
    assert tuple(again) == pytest.approx(tuned.recalls)
    assert tuned.recalls == pytest.approx(chosen.recalls)  # the tuning subset is all 200


def test_tuner_says_when_nothing_reaches_the_targets(vectors: np.ndarray) -> None:
    coarse = IvfPqParams(nlist=8, m=2, nbits=4, nprobe=8, refine="none", refine_factor=1)
    index = build_ivfpq(vectors, coarse, allow_gpu=False).index
    queries = clustered_vectors(100, DIM, seed=5)
    tuned = tune_search(index, vectors, queries, GATE_KS, coarse, SearchTuning(), 0.95)
    assert not tuned.met_targets
    assert {t.refine_factor for t in tuned.trials} == {1}  # no re-rank: factor 1 only

    def slack(t: SearchTrial) -> float:
        return min(r - g for r, g in zip(t.recalls, tuned.targets, strict=True))

    assert tuned.chosen == max(tuned.trials, key=slack)  # the most accurate one measured
    assert tuned.chosen.nprobe in {t.nprobe for t in tuned.trials}
    assert len(tuned.recalls) == len(GATE_KS)
    assert max(tuned.chosen.recalls) < 0.95


def test_tuner_deepens_the_rerank_when_every_list_still_misses() -> None:
    """Sparse 0/1 vectors (a kernel branch's item side) under coarse PQ codes: ×4 misses
    even with every list probed, so the factor doubles until one passes there."""
    rng = np.random.default_rng(0)
    items = (rng.random((2000, 64)) < 0.1).astype(np.float32)
    queries = rng.normal(size=(200, 64)).astype(np.float32)
    coarse = IvfPqParams(nlist=8, m=8, nbits=4, nprobe=8, refine="fp16", refine_factor=4)
    index = build_ivfpq(items, coarse, allow_gpu=False).index
    tuned = tune_search(index, items, queries, GATE_KS, coarse, SearchTuning(), 0.95)
    assert max(SearchTuning().refine_factors) == 4
    assert not any(t.meets(tuned.targets) for t in tuned.trials if t.refine_factor <= 4)
    assert tuned.met_targets and tuned.chosen.refine_factor > 4
    # the first doubling that passes at nlist: every smaller one missed there
    for t in tuned.trials:
        if t.nprobe == 8 and t.refine_factor < tuned.chosen.refine_factor:
            assert not t.meets(tuned.targets)
    again = ann_recalls(
        index, items, queries, GATE_KS, tuned.chosen.nprobe, tuned.chosen.refine_factor
    )
    assert tuple(again) == pytest.approx(tuned.recalls)


def test_tuner_measures_trials_on_a_subset_and_the_choice_on_every_query(
    built: BuiltIndex, vectors: np.ndarray
) -> None:
    queries = clustered_vectors(300, DIM, seed=6)
    tuning = SearchTuning(queries=50)
    tuned = tune_search(built.index, vectors, queries, GATE_KS, choose_params(N, DIM), tuning, 0.9)
    assert tuned.met_targets
    full = ann_recalls(
        built.index, vectors, queries, GATE_KS, tuned.chosen.nprobe, tuned.chosen.refine_factor
    )
    assert tuple(full) == pytest.approx(tuned.recalls)
    # 50 of 300 queries: recall@10 is a multiple of 1/500 on the subset
    assert all(round(t.recalls[0] * 500, 6).is_integer() for t in tuned.trials)


def test_build_serves_the_tuned_configuration(tmp_path: Path) -> None:
    model = write_model_artifact(tmp_path / "model", n_items=2000, n_users=200)
    out = tmp_path / "index"
    out.mkdir()
    heuristic = choose_params(2000, 16)
    manifest = write_index_dir(model, out, "v1", params=None, allow_gpu=False)
    assert manifest.nprobe < heuristic.nprobe
    assert manifest.refine_factor in SearchTuning().refine_factors
    assert all(q.nprobe == manifest.nprobe for q in manifest.quality_by_k)
    assert all(q.refine_factor == manifest.refine_factor for q in manifest.quality_by_k)
    assert [
        q.recall >= target for q, target in zip(manifest.quality_by_k, (0.96, 0.97), strict=True)
    ] == [True, True]
    loaded = load_index_dir(out)
    assert loaded.index.k_factor == manifest.refine_factor  # type: ignore[attr-defined]


def test_build_refuses_when_no_configuration_passes_the_gate(tmp_path: Path) -> None:
    model = write_model_artifact(tmp_path / "model", n_items=400, n_users=100)
    out = tmp_path / "index"
    out.mkdir()
    coarse = IvfPqParams(
        nlist=8, m=2, nbits=4, nprobe=2, refine="none", refine_factor=1, tuning=SearchTuning()
    )
    with pytest.raises(QualityGateFailed, match=r"nprobe=\d+ refine_factor=1: .*required 0\.95"):
        write_index_dir(model, out, "v1", params=coarse, allow_gpu=False)
    assert list(out.iterdir()) == []


def test_fast_scan_params_keep_the_code_bytes_and_need_a_trainable_catalog() -> None:
    eight_bit = choose_params(N, DIM)  # PQ16x8: 16 bytes per item
    fast = choose_params(N, DIM, fast_scan=True)
    assert fast.fast_scan and fast.factory == f"IVF{fast.nlist},PQ32x4fs,Refine(SQfp16)"
    assert fast.m * fast.nbits == eight_bit.m * eight_bit.nbits  # same bytes per code
    assert fast.tuning is not None and fast.tuning.refine_factors == (4, 8, 16)
    assert not choose_params(100, DIM, fast_scan=True).fast_scan  # too few for 16 centroids
    assert not choose_params(N, 3, fast_scan=True).fast_scan  # no even sub-quantizer count
    with pytest.raises(ValueError, match="fast-scan"):
        IvfPqParams(nlist=8, m=16, nbits=8, nprobe=2, fast_scan=True)


def test_fast_scan_index_passes_the_gate_and_serves_like_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fast-scan build: CPU even where a GPU is seen (not counted as a fallback), tuned
    and gated like any other, loaded and searched through the same LoadedIndex path."""
    model = write_model_artifact(tmp_path / "model", n_items=N, n_users=300, dim=DIM)
    out = tmp_path / "index"
    out.mkdir()
    monkeypatch.setattr("serving.index.build.gpu_count", lambda: 1)
    before = gpu_fallbacks("params") + gpu_fallbacks("error")
    manifest = write_index_dir(model, out, "v1", min_recall=0.95, fast_scan=True)
    assert gpu_fallbacks("params") + gpu_fallbacks("error") == before
    assert manifest.factory.endswith("x4fs,Refine(SQfp16)") and manifest.pq_nbits == 4
    assert manifest.build_device == "cpu" and "fast-scan" in manifest.build_note
    assert all(q.recall >= 0.95 for q in manifest.quality_by_k)
    loaded = load_index_dir(out)
    items = model.item_vectors()[:50]
    scores, ids = loaded.search(items, 10, manifest.nprobe)
    assert (ids[:, 0] == np.arange(50)).mean() >= 0.9  # an item's own vector comes first
    assert all(list(row) == sorted(row, reverse=True) for row in scores)
