"""The closed-form linear branch (low-rank EASE) and the towers that carry it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evaluation.baselines import ease_weights as reference_ease
from tests.unit.towers_steps import (
    assert_served_is_the_blend,
    dense_matrix,
    encode_items_added_after_training,
    export_and_reload,
    learnt_vectors,
)
from training.config import TrainConfig
from training.data.schema import Dataset
from training.data.synthetic import generate
from training.linear_branch import fit_linear_branch, item_covariance
from training.train import TrainedModel, train_two_tower


def _pairs(rows: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id"])


HAND = _pairs(
    [("u1", "a"), ("u1", "b"), ("u2", "b"), ("u2", "c"), ("u3", "a"), ("u3", "c"), ("u4", "c")]
)
ITEMS = ["a", "b", "c", "d"]  # d has no interactions


def test_full_rank_branch_scores_exactly_as_ease() -> None:
    branch = fit_linear_branch(HAND, ITEMS, rank=4, l2=2.0)
    x = dense_matrix(HAND, ["u1", "u2", "u3", "u4"], ITEMS)
    ease = x @ reference_ease(x, 2.0)
    got = x @ branch.user_rows[1:].astype(np.float64) @ branch.item_rows[1:].T
    np.testing.assert_allclose(got[:, :3], ease[:, :3], atol=1e-5)
    # Row 0 (unknown/padding) and the item without interactions carry nothing.
    assert not branch.user_rows[0].any() and not branch.item_rows[0].any()
    assert not branch.item_rows[4].any()


def test_low_rank_branch_is_the_best_rank_r_fit_of_the_training_scores() -> None:
    data = generate(n_users=80, n_items=40, interactions_per_user=8, seed=5).interactions
    items = sorted(data["item_id"].unique())
    users = sorted(data["user_id"].unique())
    x = dense_matrix(data, users, items)
    full = x @ reference_ease(x, 10.0)
    branch = fit_linear_branch(data, items, rank=6, l2=10.0)
    got = x @ branch.user_rows[1:].astype(np.float64) @ branch.item_rows[1:].T
    # Eckart–Young: no rank-6 matrix is closer to X·B than its truncated SVD.
    u, s, vt = np.linalg.svd(full)
    best = (u[:, :6] * s[:6]) @ vt[:6]
    assert np.linalg.norm(got - full) == pytest.approx(np.linalg.norm(best - full), rel=1e-3)
    assert branch.rank == 6 and branch.item_cov.shape == (6, 6)


def test_item_covariance_gives_the_per_user_score_spread() -> None:
    rng = np.random.default_rng(0)
    items, user = rng.normal(size=(30, 5)), rng.normal(size=5)
    cov = item_covariance(items)
    assert np.sqrt(user @ cov @ user) == pytest.approx(np.std(items @ user), rel=1e-9)


# --- towers with the branch: training, serving vectors, export -----------------------

CONFIG = TrainConfig(
    epochs=2,
    batch_size=64,
    embedding_dim=8,
    id_embedding_dim=8,
    feature_embedding_dim=4,
    history_length=3,
    linear_rank=5,
    linear_history_length=8,
    linear_weight=1.5,
    patience=1,
)


@pytest.fixture(scope="module")
def trained() -> tuple[TrainedModel, Dataset]:
    data = generate(n_users=50, n_items=40, interactions_per_user=10, seed=2)
    dataset = Dataset(data.interactions, data.items, data.users, source="synthetic")
    return train_two_tower(dataset, CONFIG), dataset


def test_served_scores_are_the_z_scored_sum_of_both_parts(
    trained: tuple[TrainedModel, Dataset],
) -> None:
    model, _ = trained
    users, items = model.user_vectors(), model.item_vectors()
    assert users.shape == (50, 5 + 8) and items.shape == (40, 5 + 8)
    np.testing.assert_allclose(np.linalg.norm(users, axis=1), 1.0, atol=1e-5)
    assert {"recall@10", "learnt_recall@10"} <= set(model.metrics)

    # The same users scored by each part on its own, z-scored over the catalogue.
    learnt_users, learnt_items = learnt_vectors(model)
    index = {item: i + 1 for i, item in enumerate(model.item_ids)}
    rows = np.asarray(model.user_tower.linear_rows)
    linear_users = np.stack([rows[[index[i] for i in h]].sum(axis=0) for h in model.histories])
    linear_items = np.asarray(model.item_tower.linear_rows)[1:]
    assert_served_is_the_blend(
        model, [(1.0, linear_users @ linear_items.T), (1.5, learnt_users @ learnt_items.T)]
    )
    # The branch reads more history than the learnt pooling does.
    assert max(len(h) for h in model.histories) == 8


def test_export_with_the_branch_reloads_identically(
    trained: tuple[TrainedModel, Dataset], tmp_path: Path
) -> None:
    model, _ = trained
    manifest, encoder, stored = export_and_reload(
        model, CONFIG, tmp_path, "20261130T120000Z-1inear"
    )
    assert manifest["history_length"] == 8 and manifest["embedding_dim"] == 13
    # A new event moves the linear part too (it is not in the learnt pooling's window).
    fresh = encoder.encode([model.user_ids[0]], [[model.item_ids[-1], *model.histories[0]]])
    assert not np.allclose(fresh, stored[[0]], atol=1e-4)


def test_an_item_added_after_training_gets_zeros_in_the_linear_part(tmp_path: Path) -> None:
    served, trained = encode_items_added_after_training(CONFIG, tmp_path, "20261130T130000Z-1inear")
    assert served.shape == (10, 5 + 8)
    assert not served[:, :5].any()  # no interactions: nothing for the linear branch
    np.testing.assert_allclose(served, trained, atol=1e-5)
    assert np.abs(served[:, 5:]).sum() > 0
