"""artifacts.model_gate: a model is promoted only if it beats popularity and the serving model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from artifacts.errors import ArtifactNotFound
from artifacts.model_gate import (
    DEFAULT_GATE_METRICS,
    ModelGateConfig,
    ModelGateFailed,
    compare_metrics,
    evaluate_model,
    gate_and_promote,
)
from artifacts.store import ArtifactStore

GOOD = {
    "recall@10": 0.20,
    "ndcg@10": 0.10,
    "recall@100": 0.60,
    "popularity_recall@10": 0.10,
    "popularity_recall@100": 0.40,
    "best_epoch": 5.0,
}


def _with(**changes: float) -> dict[str, float]:
    return {**GOOD, **{k.replace("_at_", "@"): v for k, v in changes.items()}}


def publish_model(
    store: ArtifactStore, tmp: Path, version: str, metrics: dict[str, float], promote: bool
) -> str:
    src = tmp / f"src-{version}"
    src.mkdir()
    (src / "metrics.json").write_text(json.dumps(metrics))
    return store.publish("models", version, src, set_latest=promote)


def publish_index(store: ArtifactStore, tmp: Path, version: str, model: str) -> None:
    src = tmp / f"src-{version}"
    src.mkdir()
    manifest = {"schema_id": "recall.index/v1", "index_version": version, "model_version": model}
    (src / "manifest.json").write_text(json.dumps(manifest))
    store.publish("indexes", version, src)


# --- the comparison alone -----------------------------------------------------------------


def test_a_model_beating_both_baselines_passes() -> None:
    checks, problems = compare_metrics(GOOD, _with(recall_at_10=0.19), ModelGateConfig())
    assert not problems and all(c.passed for c in checks)
    # recall@10 and @100 against popularity; all three metrics against the serving model.
    assert [(c.metric, c.baseline) for c in checks] == [
        ("recall@10", "popularity"),
        ("recall@10", "serving model"),
        ("ndcg@10", "serving model"),
        ("recall@100", "popularity"),
        ("recall@100", "serving model"),
    ]


def test_popularity_margin_is_relative() -> None:
    config = ModelGateConfig(popularity_margin=0.5)  # must reach 0.15 (0.10 × 1.5)
    checks, _ = compare_metrics(_with(recall_at_10=0.149), None, config)
    failed = [c for c in checks if not c.passed]
    assert [(c.metric, c.required) for c in failed] == [("recall@10", pytest.approx(0.15))]
    checks, _ = compare_metrics(_with(recall_at_10=0.15), None, config)
    assert all(c.passed for c in checks)


def test_serving_tolerance_is_relative() -> None:
    serving = _with(ndcg_at_10=0.20)
    config = ModelGateConfig(serving_tolerance=0.1)  # ndcg@10 must reach 0.18
    checks, _ = compare_metrics(_with(ndcg_at_10=0.179), serving, config)
    assert [c.metric for c in checks if not c.passed] == ["ndcg@10"]
    checks, _ = compare_metrics(_with(ndcg_at_10=0.18), serving, config)
    assert all(c.passed for c in checks)


def test_worse_than_popularity_fails_even_without_a_serving_model() -> None:
    checks, _ = compare_metrics(_with(recall_at_100=0.39), None, ModelGateConfig())
    assert [(c.metric, c.baseline) for c in checks if not c.passed] == [
        ("recall@100", "popularity")
    ]


def test_a_missing_metric_is_a_failure_and_old_serving_metrics_are_skipped() -> None:
    candidate = {k: v for k, v in GOOD.items() if k != "ndcg@10"}
    _, problems = compare_metrics(candidate, None, ModelGateConfig())
    assert problems == ["ndcg@10 missing from the candidate's metrics.json"]
    old = {"recall@10": 0.1}  # an older artifact: no ndcg@10 nor recall@100
    checks, problems = compare_metrics(GOOD, old, ModelGateConfig())
    assert not problems
    assert [c.metric for c in checks if c.baseline == "serving model"] == ["recall@10"]


def test_config_rejects_unknown_fields_and_bad_margins() -> None:
    with pytest.raises(ValueError, match="extra"):
        ModelGateConfig(margin=0.1)  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        ModelGateConfig(serving_tolerance=1.5)
    assert ModelGateConfig().metrics == DEFAULT_GATE_METRICS


# --- against the store: the serving model is the LATEST index's --------------------------


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    """Model m1 serves (index i1 built from it, models/LATEST → m1)."""
    store = ArtifactStore(tmp_path / "artifacts")
    publish_model(store, tmp_path, "m1", _with(recall_at_10=0.30), promote=True)
    publish_index(store, tmp_path, "i1", "m1")
    return store


def test_a_model_worse_than_the_serving_one_is_not_promoted(
    store: ArtifactStore, tmp_path: Path
) -> None:
    uri = publish_model(store, tmp_path, "m2", _with(recall_at_10=0.20), promote=False)
    with pytest.raises(ModelGateFailed) as failed:
        gate_and_promote(uri)
    message = str(failed.value)
    assert "m2 failed the model gate, not promoted" in message
    assert "recall@10 0.2000 vs serving model m1 0.3000" in message
    assert store.latest("models") == "m1"
    assert store.versions("indexes") == ["i1"] and store.latest("indexes") == "i1"


def test_a_model_that_passes_moves_models_latest(store: ArtifactStore, tmp_path: Path) -> None:
    uri = publish_model(store, tmp_path, "m2", _with(recall_at_10=0.29), promote=False)
    assert store.latest("models") == "m1"
    assert gate_and_promote(uri) == uri
    assert store.latest("models") == "m2"


def test_without_an_index_only_popularity_is_compared(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    uri = publish_model(store, tmp_path, "m1", GOOD, promote=False)
    result = evaluate_model(store, "m1")
    assert result.passed and result.serving_model_version is None
    assert {c.baseline for c in result.checks} == {"popularity"}
    assert "serving model none (no index published)" in result.summary()
    gate_and_promote(uri)
    assert store.latest("models") == "m1"


def test_regating_the_serving_model_compares_it_with_popularity_only(
    store: ArtifactStore,
) -> None:
    result = evaluate_model(store, "m1")
    assert result.passed and {c.baseline for c in result.checks} == {"popularity"}


def test_unknown_model_version(store: ArtifactStore) -> None:
    with pytest.raises(ArtifactNotFound):
        evaluate_model(store, "nope")


def test_an_unenforced_gate_promotes_and_warns(
    store: ArtifactStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    uri = publish_model(store, tmp_path, "m2", _with(recall_at_10=0.05), promote=False)
    gate_and_promote(uri, ModelGateConfig(enforce=False))
    assert store.latest("models") == "m2"
    assert "model gate not enforced; promoting despite: FAIL: recall@10" in caplog.text
