"""The closed-form kernel branch (∞-AE: NTK kernel ridge over users) and its towers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

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
from training.features import FeatureColumn, FittedFeature
from training.kernel_branch import (
    BIAS_VARIANCE,
    WEIGHT_VARIANCE,
    anchor_count,
    fit_kernel_branch,
    ntk,
    profile_tables,
    user_profiles,
)
from training.train import TrainedModel, history_indices, train_two_tower


def test_ntk_of_one_hidden_layer_by_hand() -> None:
    # Two inputs in d = 4: x·x = 2, y·y = 1, x·y = 1.
    x, y = np.array([[1.0, 1, 0, 0]]), np.array([[1.0, 0, 0, 0]])
    sw, sb, d = WEIGHT_VARIANCE, BIAS_VARIANCE, 4
    s_xy, s_xx, s_yy = sw * 1 / d + sb, sw * 2 / d + sb, sw * 1 / d + sb
    cos = s_xy / np.sqrt(s_xx * s_yy)
    angle = np.arccos(cos)
    sigma1 = sw * np.sqrt(s_xx * s_yy) * (np.sin(angle) + (np.pi - angle) * cos) / (2 * np.pi)
    expected = sigma1 + sb + s_xy * sw * (np.pi - angle) / (2 * np.pi)
    assert ntk(x, y, depth=1)[0, 0] == pytest.approx(expected, rel=1e-12)
    # On the diagonal θ = 0: Σ¹ = σ_w² Σ⁰ / 2 + σ_b², Θ¹ = Σ¹ + Σ⁰ σ_w² / 2.
    assert ntk(x, x, depth=1)[0, 0] == pytest.approx(2 * (sw * s_xx / 2) + sb, rel=1e-12)


def test_ntk_expectations_match_a_wide_random_relu_layer() -> None:
    """Σ¹ = σ_w² E[relu(u) relu(v)] + σ_b² and the derivative term σ_w² E[relu'(u) relu'(v)]
    for (u, v) ~ N(0, Σ⁰): the arc-cosine formulas the recursion uses, by Monte Carlo."""
    rng = np.random.default_rng(0)
    x, y = np.array([[1.0, 1, 1, 0, 0]]), np.array([[0.0, 1, 1, 1, 0]])
    sw, sb, d = WEIGHT_VARIANCE, BIAS_VARIANCE, 5
    cov = np.array([[x @ x.T, x @ y.T], [y @ x.T, y @ y.T]]).reshape(2, 2) * sw / d + sb
    u, v = rng.multivariate_normal(np.zeros(2), cov, size=2_000_000).T
    sigma1 = sw * np.mean(np.maximum(u, 0) * np.maximum(v, 0)) + sb
    derivative = sw * np.mean((u > 0) & (v > 0))
    expected = sigma1 + cov[0, 1] * derivative
    assert ntk(x, y, depth=1)[0, 0] == pytest.approx(expected, rel=5e-3)


def test_branch_scores_are_the_kernel_ridge_predictions() -> None:
    data = generate(n_users=30, n_items=20, interactions_per_user=6, seed=3).interactions
    users, items = sorted(data["user_id"].unique()), sorted(data["item_id"].unique())
    items = [*items, "never-seen"]
    x = dense_matrix(data, users, items)
    branch = fit_kernel_branch(data, items, size=30, depth=2, reg=0.5, seed=0)
    k = ntk(x, x, 2)
    expected = k @ np.linalg.solve(k + 0.5 * np.trace(k) / 30 * np.eye(30), x)
    # The towers' view: a user's kernel row against the anchors (x as the item-major table)
    # times A⁻¹, against each item's 0/1 column.
    anchors = branch.anchors[1:].T.astype(np.float64)
    rows = ntk(x, anchors, 2, b_sq=branch.anchor_sq)
    got = rows @ branch.user_map.astype(np.float64) @ branch.item_rows[1:].T
    # Anchors are the users in order of first appearance; the scores do not depend on it.
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert not branch.item_rows[0].any() and not branch.anchors[0].any()
    assert not branch.item_rows[-1].any()  # no interactions: nothing to predict it from
    assert branch.item_cov.shape == (30, 30) and branch.anchor_valid.all()


def test_more_users_than_columns_samples_anchors_fewer_pads() -> None:
    data = generate(n_users=40, n_items=15, interactions_per_user=5, seed=4).interactions
    items = sorted(data["item_id"].unique())
    sampled = fit_kernel_branch(data, items, size=25, depth=1, reg=1.0, seed=7)
    assert sampled.size == 25 and sampled.anchor_valid.sum() == 25
    again = fit_kernel_branch(data, items, size=25, depth=1, reg=1.0, seed=7)
    np.testing.assert_array_equal(sampled.anchors, again.anchors)  # seeded
    padded = fit_kernel_branch(data, items, size=50, depth=1, reg=1.0, seed=7)
    assert padded.anchor_valid.tolist() == [1.0] * 40 + [0.0] * 10
    assert not padded.item_rows[:, 40:].any() and not padded.user_map[40:].any()
    assert not padded.user_map[:, 40:].any()
    assert anchor_count(4096, 943, 1664, 20_000) == 943
    assert anchor_count(25, 40, 15, 20_000) == 25
    assert anchor_count(4096, 943, 30_000, 20_000) == 0  # too many items: off
    with pytest.raises(ValueError, match="reg"):
        fit_kernel_branch(data, items, size=5, depth=1, reg=0.0, seed=0)


def test_feature_profiles_by_hand() -> None:
    genres = FittedFeature(
        FeatureColumn(column="genres", kind="multi_categorical"), vocabulary=("a", "b", "c")
    )
    other = FittedFeature(FeatureColumn(column="other", kind="categorical"), vocabulary=("z",))
    # three items: {a, b}, {b}, no genre (index 0 = missing); width 2
    table = {"genres": np.array([[1, 2], [2, 0], [0, 0]]), "other": np.array([[1], [1], [1]])}
    (g,) = profile_tables([genres, other], table, ["genres", "absent"])
    assert g.tolist() == [[0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    x = np.array([[1.0, 1, 0], [0, 0, 1], [1, 0, 1]])
    got = user_profiles(x, [g], scale=2.0)
    # user 0: a once, b twice over 3 values; user 1: nothing; user 2: a, b over 2
    np.testing.assert_allclose(got, [[0, 2 / 3, 4 / 3, 0], [0, 0, 0, 0], [0, 1, 1, 0]])
    assert user_profiles(x, [], 2.0).shape == (3, 0)


def test_profiles_join_the_kernel_input() -> None:
    data = generate(n_users=20, n_items=12, interactions_per_user=4, seed=6).interactions
    users, items = sorted(data["user_id"].unique()), sorted(data["item_id"].unique())
    x = dense_matrix(data, users, items)
    table = (np.arange(len(items) * 3).reshape(len(items), 3) % 4 == 0).astype(np.float32)
    branch = fit_kernel_branch(data, items, 20, 2, 0.5, 0, [table], scale=3.0)
    inputs = np.concatenate([x, user_profiles(x, [table], 3.0)], axis=1)
    k = ntk(inputs, inputs, 2)
    expected = k @ np.linalg.solve(k + 0.5 * np.trace(k) / 20 * np.eye(20), x)
    anchors = np.concatenate([branch.anchors[1:], branch.anchor_profiles], axis=0).T
    rows = ntk(inputs, anchors, 2, b_sq=branch.anchor_sq)
    got = rows @ branch.user_map.astype(np.float64) @ branch.item_rows[1:].T
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert branch.anchor_profiles.shape == (3, 20)


# --- towers with the branch: training, serving vectors, export -----------------------

CONFIG = TrainConfig(
    epochs=2,
    batch_size=64,
    embedding_dim=8,
    id_embedding_dim=8,
    feature_embedding_dim=4,
    history_length=3,
    kernel_max_users=60,  # more than the 50 users: one anchor per user
    kernel_depth=3,
    linear_history_length=16,  # every user's whole history: the anchors' rows
    linear_weight=0.5,
    patience=1,
)


@pytest.fixture(scope="module")
def trained() -> TrainedModel:
    data = generate(n_users=50, n_items=40, interactions_per_user=10, seed=2)
    return train_two_tower(Dataset(data.interactions, data.items, data.users, "synthetic"), CONFIG)


@pytest.mark.parametrize("with_profiles", [False, True])
def test_user_tower_computes_the_same_kernel_as_numpy(
    trained: TrainedModel, with_profiles: bool
) -> None:
    model = trained
    if with_profiles:
        config = CONFIG.model_copy(update={"kernel_item_features": ["genres", "year"]})
        data = generate(n_users=30, n_items=25, interactions_per_user=6, seed=8)
        model = train_two_tower(Dataset(data.interactions, data.items, data.users, "s"), config)
        assert len(model.item_tower.kernel_profiles) == 2
    config = model.config
    index = {item: i + 1 for i, item in enumerate(model.item_ids)}
    history = history_indices(model.histories, index, config.input_history_length)
    history[0, -1] = history[0, 0]  # a repeated item counts once
    got = model.user_tower._kernel_row(tf.constant(history)).numpy()
    x = np.zeros((len(history), len(index) + 1))
    for row, items in enumerate(history):
        x[row, items] = 1.0
    x = x[:, 1:]
    tables = model.item_tower.kernel_profiles
    inputs = np.concatenate([x, user_profiles(x, tables, config.kernel_feature_scale)], axis=1)
    tower = model.user_tower
    anchors = np.concatenate(
        [np.asarray(tower.kernel_anchors)[1:], np.asarray(tower.kernel_anchor_profiles)]
    ).T
    expected = ntk(inputs, anchors, config.kernel_depth)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_served_scores_are_the_z_scored_sum_of_both_parts(trained: TrainedModel) -> None:
    model = trained
    users, items = model.user_vectors(), model.item_vectors()
    assert users.shape == (50, 50 + 8) and items.shape == (40, 50 + 8)
    np.testing.assert_allclose(np.linalg.norm(users, axis=1), 1.0, atol=1e-5)
    assert {"recall@10", "learnt_recall@10"} <= set(model.metrics)

    learnt_users, learnt_items = learnt_vectors(model)
    # The kernel part on its own: ∞-AE fitted on every user, scored for every user.
    assert max(len(h) for h in model.histories) < 16  # the histories are whole
    data_items = model.item_ids
    x = np.zeros((50, len(data_items)))
    for row, history in enumerate(model.histories):
        x[row, [data_items.index(i) for i in history]] = 1.0
    k = ntk(x, x, CONFIG.kernel_depth)
    infae = k @ np.linalg.solve(k + CONFIG.kernel_reg * np.trace(k) / 50 * np.eye(50), x)
    assert_served_is_the_blend(model, [(1.0, infae), (0.5, learnt_users @ learnt_items.T)])


def test_a_catalogue_over_the_item_cap_trains_without_the_branch() -> None:
    data = generate(n_users=20, n_items=30, interactions_per_user=6, seed=9)
    config = CONFIG.model_copy(update={"epochs": 1, "linear_max_items": 29})
    model = train_two_tower(Dataset(data.interactions, data.items, data.users, "s"), config)
    assert model.item_tower.kernel_size == 0 and model.user_tower.kernel_anchors is None
    assert model.user_vectors().shape == (20, 8)  # the learnt part only


def test_the_towers_share_one_anchor_table(trained: TrainedModel) -> None:
    assert trained.user_tower.kernel_anchors is trained.item_tower.kernel_rows


def test_export_with_the_branch_reloads_identically(trained: TrainedModel, tmp_path: Path) -> None:
    model = trained
    manifest, encoder, stored = export_and_reload(
        model, CONFIG, tmp_path, "20261201T120000Z-kerne1"
    )
    assert manifest["history_length"] == 16 and manifest["embedding_dim"] == 58
    # A new event moves the kernel part: the user's row against the anchors changes.
    unseen = next(i for i in model.item_ids if i not in model.histories[0])
    fresh = encoder.encode([model.user_ids[0]], [[unseen, *model.histories[0]]])
    assert not np.allclose(fresh[:, :50], stored[[0], :50], atol=1e-4)
    # A user unseen at training time with a few events gets a kernel part too.
    new = encoder.encode(["someone-new"], [model.histories[3][:3]])
    assert np.abs(new[:, :50]).sum() > 0


def test_an_item_added_after_training_gets_zeros_in_the_kernel_part(tmp_path: Path) -> None:
    served, trained = encode_items_added_after_training(CONFIG, tmp_path, "20261201T130000Z-kerne1")
    assert served.shape == (10, 40 + 8)  # 40 users: 40 anchors
    assert not served[:, :40].any()
    np.testing.assert_allclose(served, trained, atol=1e-5)
    assert np.abs(served[:, 40:]).sum() > 0
