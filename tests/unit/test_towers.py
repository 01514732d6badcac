"""The feature-aware towers: features, history examples, losses, the validation/final fit,
the exported SavedModel and the UserEncoder that re-encodes fresh histories."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from artifacts.checksums import MANIFEST_NAME, verify_files
from serving.model_artifact import open_model_artifact
from training.config import TrainConfig
from training.data.schema import Dataset
from training.data.synthetic import generate
from training.evaluation import ranking_metrics
from training.export import MODEL_SCHEMA, write_model_dir
from training.features import (
    FeatureColumn,
    FeatureSpec,
    FeatureSpecError,
    fit_feature,
    fit_features,
)
from training.retrieval_task import full_softmax_loss, sampled_softmax_loss
from training.train import TrainedModel, history_matrix, train_two_tower
from training.user_encoder import UserEncoder

# --- features ------------------------------------------------------------------------------


def test_categorical_feature_vocabulary_min_count_and_unknown() -> None:
    spec = FeatureColumn(column="gender", kind="categorical", min_count=2)
    fitted = fit_feature(spec, pd.Series(["M", "F", "M", "F", "X"]))
    assert fitted.vocabulary == ("F", "M") and fitted.size == 3
    # X is rarer than min_count, Z unseen, None missing: all index 0.
    codes = fitted.encode(pd.Series(["M", "F", "X", "Z", None]))
    assert codes[:, 0].tolist() == [2, 1, 0, 0, 0]


def test_multi_categorical_pads_and_truncates() -> None:
    spec = FeatureColumn(column="genres", kind="multi_categorical", max_values=2)
    fitted = fit_feature(spec, pd.Series([["a", "b"], ["c"], "a|c"]))
    assert fitted.vocabulary == ("a", "b", "c")
    codes = fitted.encode(pd.Series([["a", "b", "c"], ["c"], "b|zz", []]))
    assert codes.tolist() == [[1, 2], [3, 0], [2, 0], [0, 0]]


def test_bucketized_with_boundaries_and_quantiles() -> None:
    fixed = fit_feature(
        FeatureColumn(column="age", kind="bucketized", boundaries=[18, 30]), pd.Series([1])
    )
    codes = fixed.encode(pd.Series([10, 18, 29, 30, 99, None]))
    # missing=0; <18 → 1; [18, 30) → 2; ≥30 → 3.
    assert codes[:, 0].tolist() == [1, 2, 2, 3, 3, 0]
    assert fixed.size == 4
    quantiles = fit_feature(
        FeatureColumn(column="year", kind="bucketized", buckets=4), pd.Series(range(100))
    )
    assert quantiles.boundaries == pytest.approx((24.75, 49.5, 74.25))
    with pytest.raises(ValueError, match="increasing"):
        FeatureColumn(column="x", kind="bucketized", boundaries=[3, 1])


def test_text_tokens_lowercase_words() -> None:
    fitted = fit_feature(
        FeatureColumn(column="title", kind="text_tokens", max_values=3),
        pd.Series(["Toy Story", "Story of a TOY", "Heat"]),
    )
    assert fitted.vocabulary == ("a", "heat", "of", "story", "toy")
    assert fitted.encode(pd.Series(["toy story 2"])).tolist() == [[5, 4, 0]]


def test_absent_optional_column_turns_feature_off_and_required_one_fails() -> None:
    table = pd.DataFrame({"item_id": ["a"], "brand": ["x"]})
    specs = [
        FeatureColumn(column="genres", kind="multi_categorical"),
        FeatureColumn(column="brand", kind="categorical"),
    ]
    assert [f.name for f in fit_features(specs, table, "items")] == ["brand"]
    with pytest.raises(FeatureSpecError, match="'genres' is required"):
        fit_features(
            [FeatureColumn(column="genres", kind="multi_categorical", optional=False)],
            table,
            "items",
        )


# --- history examples --------------------------------------------------------------------


def test_history_matrix_is_most_recent_first_within_user() -> None:
    users = np.array([1, 1, 1, 2, 2])
    items = np.array([10, 11, 12, 20, 21])
    got = history_matrix(users, items, 2)
    assert got.tolist() == [[0, 0], [10, 0], [11, 10], [0, 0], [20, 0]]


# --- losses ------------------------------------------------------------------------------


def test_full_softmax_matches_hand_computation() -> None:
    users = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    items = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], np.float32)
    positives = np.array([3, 2])  # vocabulary indices (1-based)
    logits = users @ items.T / 0.5
    expected = np.mean(
        [-(logits[b, p - 1] - math.log(np.exp(logits[b]).sum())) for b, p in enumerate(positives)]
    )
    got = float(full_softmax_loss(tf.constant(users), tf.constant(items), positives, 0.5))
    assert got == pytest.approx(expected, rel=1e-5)


def test_sampled_softmax_masks_sampled_copies_of_the_positive() -> None:
    users = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    cands = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [1.0, 0.0]], np.float32)
    ids = np.array([5, 6, 7, 5])  # the sampled column 3 is row 0's positive again
    log_q = np.log(np.array([0.4, 0.3, 0.2, 0.4]))
    logits = users @ cands.T / 0.5 - log_q[None, :]
    row0 = -(logits[0, 0] - math.log(np.exp(logits[0, [0, 1, 2]]).sum()))  # column 3 masked
    row1 = -(logits[1, 1] - math.log(np.exp(logits[1]).sum()))
    got = sampled_softmax_loss(
        tf.constant(users), tf.constant(cands), ids, ids[:2], 0.5, tf.constant(log_q, tf.float32)
    )
    assert float(got) == pytest.approx((row0 + row1) / 2, rel=1e-5)


# --- ranking metrics ---------------------------------------------------------------------


def test_ranking_metrics_hand_made() -> None:
    items = np.array([[1, 0], [0.9, 0.1], [0, 1], [-1, 0]], dtype=np.float32)
    users = np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32)
    # user 0: ranking 0,1,2,3; target 1 → rank 2.
    # user 1: item 0 excluded → ranking 1,2,3; target 2 → rank 2.
    # user 2: ranking 2,1,0,3; target 3 → rank 4.
    targets = np.array([1, 2, 3])
    seen = [np.array([], dtype=np.int64), np.array([0]), np.array([], dtype=np.int64)]
    got = ranking_metrics(users, items, targets, seen, [2, 4])
    assert got["recall@2"] == pytest.approx(2 / 3)
    assert got["recall@4"] == pytest.approx(1.0)
    assert got["ndcg@2"] == pytest.approx(2 * (1 / math.log2(3)) / 3)
    assert got["ndcg@4"] == pytest.approx((2 / math.log2(3) + 1 / math.log2(5)) / 3)
    assert got["mrr@2"] == pytest.approx((0.5 + 0.5) / 3)


# --- end to end: validate, refit on everything, export -----------------------------------

CONFIG = TrainConfig(
    epochs=3,
    batch_size=64,
    embedding_dim=8,
    id_embedding_dim=8,
    feature_embedding_dim=4,
    history_length=5,
    patience=1,
)


def _dataset() -> Dataset:
    data = generate(n_users=60, n_items=50, interactions_per_user=10)
    return Dataset(data.interactions, data.items, data.users, source="synthetic")


@pytest.fixture(scope="module")
def trained() -> tuple[TrainedModel, list[float]]:
    epochs: list[float] = []
    model = train_two_tower(_dataset(), CONFIG, on_epoch=lambda e, n, loss: epochs.append(loss))
    return model, epochs


def test_training_validates_then_refits_on_everything(
    trained: tuple[TrainedModel, list[float]],
) -> None:
    model, epoch_losses = trained
    users, items = model.user_vectors(), model.item_vectors()
    assert users.shape == (60, 8) and users.dtype == np.float32
    assert items.shape == (50, 8)  # every catalogue item has a vector (features)
    np.testing.assert_allclose(np.linalg.norm(users, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(items, axis=1), 1.0, atol=1e-5)
    stages = [p["stage"] for p in model.curve]
    best = int(model.metrics["best_epoch"])
    assert stages == ["validate"] * stages.count("validate") + ["final"] * best
    assert len(epoch_losses) == len(model.curve)
    assert all(math.isfinite(x) for x in epoch_losses)
    assert model.counts["interactions"] == model.counts["train_interactions"] == 600
    assert {"val_recall@10", "recall@10", "ndcg@10", "popularity_recall@10"} <= set(model.metrics)
    # Item features were found in the synthetic items table; users have age and gender.
    assert [f.name for f in model.vocab.item_features] == ["genres", "year"]
    assert [f.name for f in model.vocab.user_features] == ["age", "gender"]
    # Every user's history is its most recent items, most recent first.
    data = _dataset().interactions
    u0 = data[data["user_id"] == model.user_ids[0]].sort_values("timestamp")
    assert model.histories[0] == u0["item_id"].tolist()[::-1][:5]


def test_holdout_fit_publishes_the_validation_model() -> None:
    config = CONFIG.model_copy(update={"final_fit": "holdout", "epochs": 1})
    model = train_two_tower(_dataset(), config)
    assert [p["stage"] for p in model.curve] == ["validate"]
    assert model.counts["train_interactions"] == 600 - 2 * 60


def test_ids_only_ablation_has_no_features_or_history() -> None:
    config = CONFIG.model_copy(
        update={
            "epochs": 1,
            "use_history": False,
            "use_item_features": False,
            "use_user_features": False,
        }
    )
    model = train_two_tower(_dataset(), config)
    assert model.vocab.item_features == [] and model.vocab.user_features == []
    assert model.user_tower.position_logits is None


def test_a_catalogue_with_other_columns_trains_without_code_changes() -> None:
    data = generate(n_users=40, n_items=30, interactions_per_user=8, seed=3)
    items = pd.DataFrame(
        {
            "item_id": data.items["item_id"],
            "brand": [f"b{i % 4}" for i in range(30)],
            "price": np.linspace(1, 100, 30),
            "description": [f"red shoe size {i % 3}" for i in range(30)],
        }
    )
    users = pd.DataFrame({"user_id": data.users["user_id"], "country": ["de", "fr"] * 20})
    spec = FeatureSpec(
        item=[
            FeatureColumn(column="brand", kind="categorical"),
            FeatureColumn(column="price", kind="bucketized", buckets=5),
            FeatureColumn(column="description", kind="text_tokens"),
            FeatureColumn(column="genres", kind="multi_categorical"),  # absent: turned off
        ],
        user=[FeatureColumn(column="country", kind="categorical")],
    )
    config = CONFIG.model_copy(update={"epochs": 1, "features": spec})
    model = train_two_tower(Dataset(data.interactions, items, users, "other"), config)
    assert [f.name for f in model.vocab.item_features] == ["brand", "price", "description"]
    assert [f.name for f in model.vocab.user_features] == ["country"]
    assert model.item_vectors().shape == (30, 8)


def test_export_and_reload_gives_identical_vectors(
    trained: tuple[TrainedModel, list[float]], tmp_path: Path
) -> None:
    model, _ = trained
    manifest = write_model_dir(model, CONFIG, tmp_path, "20261123T073012Z-3f9a1c", "synthetic")

    on_disk = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert on_disk["schema_id"] == MODEL_SCHEMA == "recall.model/v1"
    assert on_disk["history_length"] == 5
    assert on_disk["trained_on"] == "all interactions"
    assert [f["column"] for f in on_disk["features"]["item"]] == ["genres", "year"]
    assert on_disk["metrics"]["best_epoch"] >= 1
    paths = {f["path"] for f in manifest.files}
    assert {
        "user_vectors.npy",
        "item_vectors.npy",
        "user_ids.json",
        "item_ids.json",
        "popular_items.json",
        "metrics.json",
        "training_curve.json",
        "user_tower/saved_model.pb",
    } <= paths
    verify_files(tmp_path, manifest.files)

    stored = np.load(tmp_path / "user_vectors.npy")
    encoder = UserEncoder.load(tmp_path)
    assert encoder.model_version == "20261123T073012Z-3f9a1c" and encoder.history_length == 5
    rows = [0, 5, 17, 59]
    served = encoder.encode([model.user_ids[r] for r in rows], [model.histories[r] for r in rows])
    np.testing.assert_allclose(served, stored[rows], atol=1e-5)

    # A longer history is truncated to the newest history_length items.
    longer = [*model.histories[0], "i1", "i2", "i3"]
    np.testing.assert_allclose(
        encoder.encode([model.user_ids[0]], [longer]), stored[[0]], atol=1e-5
    )
    # A new item at the front changes the vector; an unknown user with a history still
    # gets a unit vector that depends on that history.
    fresh = encoder.encode([model.user_ids[0]], [["i7", *model.histories[0]]])
    assert not np.allclose(fresh, stored[[0]], atol=1e-4)
    new_users = encoder.encode(["nobody", "nobody"], [["i1", "i2", "i3"], ["i4"]])
    np.testing.assert_allclose(np.linalg.norm(new_users, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(new_users[0], new_users[1], atol=1e-4)

    # Serving reads the same directory by contract.
    artifact = open_model_artifact(tmp_path)
    assert artifact.user_ids() == model.user_ids
    np.testing.assert_array_equal(artifact.item_vectors(), model.item_vectors())
    popular = json.loads((tmp_path / "popular_items.json").read_text())
    assert sum(p["count"] for p in popular) == 600


def test_other_items_matrix_leaves_out_the_row_itself() -> None:
    from training.train import other_items_matrix

    users = np.array([1, 1, 1, 2])
    items = np.array([10, 11, 12, 20])
    got = other_items_matrix(users, items, 3)
    # user 1, most recent first: 12, 11, 10; each row drops its own item.
    assert got.tolist() == [[12, 11, 0], [12, 10, 0], [11, 10, 0], [0, 0, 0]]
