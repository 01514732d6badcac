"""The content prior: ridge-predicted popularity from the item features, one served dimension."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training.config import TrainConfig
from training.content_prior import content_prior_of, fit_content_prior, pooled_one_hot
from training.data.schema import Dataset
from training.data.synthetic import generate
from training.export import write_model_dir
from training.features import FeatureColumn, encode_table, fit_features
from training.train import TrainedModel, train_two_tower

ITEMS = pd.DataFrame(
    {
        "item_id": ["a", "b", "c", "d", "e", "f"],
        "genres": [
            ["Action"],
            ["Action", "Sci-Fi"],
            ["Drama"],
            ["Drama", "Romance"],
            [],
            ["Action"],
        ],
        "year": [1977, 1980, 1995, 1996, 1990, 1978],
    }
)
SPEC = [
    FeatureColumn(column="genres", kind="multi_categorical"),
    FeatureColumn(column="year", kind="bucketized", boundaries=[1985.0]),
]
COUNTS = np.array([50.0, 30.0, 2.0, 1.0, 5.0, 0.0])  # f has no interactions


def _fitted() -> tuple[list, dict[str, np.ndarray]]:
    features = fit_features(SPEC, ITEMS, "items")
    return features, encode_table(features, ITEMS, "item_id", list(ITEMS["item_id"]))


def test_the_prior_is_the_ridge_fit_z_scored_over_the_trained_items() -> None:
    features, table = _fitted()
    trained = COUNTS > 0
    prior = fit_content_prior(features, table, COUNTS, trained, l2=0.5)
    assert prior is not None
    pooled = pooled_one_hot(features, table)
    got = content_prior_of(prior, pooled)
    # Reference: dense ridge with an unpenalised intercept (centred columns), then z-scored.
    x = pooled.toarray()[trained]
    y = np.log1p(COUNTS[trained])
    xc = x - x.mean(axis=0)
    w = np.linalg.solve(xc.T @ xc + 0.5 * np.eye(x.shape[1]), xc.T @ (y - y.mean()))
    fitted = xc @ w
    expected_trained = (fitted - fitted.mean()) / fitted.std()
    np.testing.assert_allclose(got[trained], expected_trained, atol=1e-5)
    assert got[trained].mean() == pytest.approx(0.0, abs=1e-6)
    assert got[trained].std() == pytest.approx(1.0, abs=1e-6)
    # The untrained action film of the 1970s is predicted popular, like a and b.
    assert got[5] > got[2] and got[5] > got[3]
    assert all(weights[0] == 0 for weights in prior.weights)  # index 0 is "missing"


def test_pooling_is_the_mean_of_each_features_present_values() -> None:
    features, table = _fitted()
    dense = pooled_one_hot(features, table).toarray()
    genres, year = features[0].size, features[1].size
    assert dense.shape == (6, genres + year)
    np.testing.assert_allclose(dense[:, :genres].sum(axis=1), [1, 1, 1, 1, 0, 1])  # e: none
    np.testing.assert_allclose(dense[1, :genres][dense[1, :genres] > 0], [0.5, 0.5])
    np.testing.assert_allclose(dense[:, genres:].sum(axis=1), 1.0)


def test_nothing_to_fit_gives_no_prior() -> None:
    features, table = _fitted()
    assert fit_content_prior(features, table, COUNTS, np.eye(6, dtype=bool)[0], 1.0) is None
    same = np.full(6, 3.0)
    assert fit_content_prior(features, table, same, same > 0, 1.0) is None  # no spread
    assert fit_content_prior([], {}, COUNTS, COUNTS > 0, 1.0) is None


# --- towers with the prior: served scores, export, an item added after training ------

CONFIG = TrainConfig(
    epochs=1,
    batch_size=64,
    embedding_dim=8,
    id_embedding_dim=8,
    feature_embedding_dim=4,
    history_length=3,
    item_id_dropout=0.2,
    content_prior_weight=0.5,
    patience=1,
)
COLD = [f"i{i}" for i in range(30, 40)]


@pytest.fixture(scope="module")
def trained() -> tuple[TrainedModel, pd.DataFrame]:
    data = generate(n_users=40, n_items=40, interactions_per_user=8, seed=3)
    warm = data.interactions[~data.interactions["item_id"].isin(COLD)]
    return train_two_tower(Dataset(warm, data.items, data.users, "synthetic"), CONFIG), data.items


def test_served_scores_are_the_learnt_z_score_plus_the_weighted_prior(
    trained: tuple[TrainedModel, pd.DataFrame],
) -> None:
    model, _ = trained
    users, items = model.user_vectors(), model.item_vectors()
    assert users.shape == (40, 8 + 1) and items.shape == (40, 8 + 1)
    assert {"recall@10", "learnt_recall@10"} <= set(model.metrics)
    vocab = model.vocab
    counts = model.item_counts.reindex(vocab.item_ids).fillna(0).to_numpy(dtype=np.float64)
    prior = fit_content_prior(
        vocab.item_features, vocab.item_feature_table, counts, counts > 0, CONFIG.content_prior_l2
    )
    assert prior is not None
    reference = content_prior_of(
        prior, pooled_one_hot(vocab.item_features, vocab.item_feature_table)
    )
    # The last item dimension is the prior the numpy reference computes, for the items
    # without interactions only (the cold ones); 0 for the others.
    cold = counts == 0
    assert cold.sum() >= len(COLD)  # held out, plus any the generator left unused
    np.testing.assert_allclose(items[cold, -1], reference[cold], atol=1e-4)
    assert not items[~cold, -1].any()

    model.user_tower.blend_on = model.item_tower.blend_on = False
    try:
        learnt = model.user_vectors() @ model.item_vectors().T
    finally:
        model.user_tower.blend_on = model.item_tower.blend_on = True
    trained_items = counts > 0
    spread = learnt[:, trained_items].std(axis=1, keepdims=True)
    expected = learnt / spread + 0.5 * np.where(cold, reference, 0.0)[None, :]
    served = users @ items.T
    for u in range(len(served)):  # equal up to a positive per-user scale
        ratio = served[u] / expected[u]
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-3)
        assert ratio[0] > 0


def test_an_item_added_after_training_gets_its_prior_from_the_exported_tower(
    trained: tuple[TrainedModel, pd.DataFrame], tmp_path: Path
) -> None:
    from training.item_encoder import ItemEncoder
    from training.user_encoder import UserEncoder

    model, items = trained
    write_model_dir(model, CONFIG, tmp_path, "20261201T120000Z-pri0r", "synthetic")
    by_id = items.set_index("item_id")
    rows = [
        {"genres": "|".join(by_id.loc[i, "genres"]), "year": str(by_id.loc[i, "year"])}
        for i in COLD
    ]
    served = ItemEncoder.load(tmp_path).encode(rows)
    in_model = model.item_vectors()[[model.item_ids.index(i) for i in COLD]]
    assert served.shape == (10, 9)
    np.testing.assert_allclose(served, in_model, atol=1e-5)
    assert np.ptp(served[:, -1]) > 0  # different content, different prior
    users = UserEncoder.load(tmp_path).encode(model.user_ids[:3], model.histories[:3])
    np.testing.assert_allclose(users, model.user_vectors()[:3], atol=1e-5)


def test_the_prior_and_the_linear_branch_stack() -> None:
    data = generate(n_users=30, n_items=30, interactions_per_user=8, seed=4)
    config = CONFIG.model_copy(update={"linear_rank": 4, "linear_weight": 2.0})
    model = train_two_tower(Dataset(data.interactions, data.items, data.users, "s"), config)
    users, items = model.user_vectors(), model.item_vectors()
    assert users.shape == (30, 4 + 8 + 1) and items.shape == (30, 4 + 8 + 1)
    # users = c·[lin/σ_lin, 2·learnt/σ_learnt, 2·0.5]: the prior dimension gives c, and then
    # each part's scores spread over the trained items by its weight.
    scale = users[:, 12:13] / (2.0 * 0.5)
    assert (scale > 0).all()
    trained = model.item_counts.reindex(model.item_ids).fillna(0).to_numpy() > 0
    linear = (users[:, :4] / scale) @ items[:, :4].T
    learnt = (users[:, 4:12] / scale) @ items[:, 4:12].T
    np.testing.assert_allclose(linear[:, trained].std(axis=1), 1.0, rtol=1e-3)
    np.testing.assert_allclose(learnt[:, trained].std(axis=1), 2.0, rtol=1e-3)


def test_without_item_features_the_prior_stays_off() -> None:
    data = generate(n_users=20, n_items=20, interactions_per_user=5, seed=5)
    config = CONFIG.model_copy(update={"use_item_features": False})
    model = train_two_tower(Dataset(data.interactions, data.items, data.users, "s"), config)
    assert not model.item_tower.has_prior
    assert model.item_vectors().shape == (20, 8)
