"""Cold-item inputs: LSH-bucket content features, item id dropout's unknown row, and P3's
content baselines (evaluation/content.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evaluation.catalog import Catalog
from evaluation.content import ContentKnnScorer, content_matrix, ridge_popularity
from training.config import TrainConfig
from training.features import FeatureColumn, FeatureSpec, encode_table, fit_features
from training.model import ItemTower

ITEMS = pd.DataFrame(
    {
        "item_id": ["a", "b", "c", "d"],
        "title": ["Star Wars", "Star Wars Returns", "Sense and Sensibility", None],
        "year": [1977, 1980, 1995, None],
        "genres": [["Action", "Sci-Fi"], ["Action", "Sci-Fi"], ["Drama", "Romance"], []],
    }
)
LSH = FeatureColumn(
    column="content",
    kind="lsh_buckets",
    source_columns=["title", "year", "genres"],
    tables=16,
    bits=4,
    seed=3,
)


def _encode(spec: FeatureColumn) -> tuple[np.ndarray, dict[str, object]]:
    (fitted,) = fit_features([spec], ITEMS, "items")
    table = encode_table([fitted], ITEMS, "item_id", ["a", "b", "c", "d", "unknown"])
    return table["content"], fitted.describe()


def test_lsh_buckets_are_deterministic_in_range_and_stored_with_the_model() -> None:
    first, described = _encode(LSH)
    again, _ = _encode(LSH)
    np.testing.assert_array_equal(first, again)
    assert first.shape == (5, 16)
    # Table t's buckets occupy rows 1 + t·16 … 16 + t·16 of one embedding.
    offsets = 1 + np.arange(16) * 16
    known = first[:3]
    assert ((known >= offsets) & (known < offsets + 16)).all()
    # No content (d) and an id absent from the table are all-missing.
    assert (first[3:] == 0).all()
    assert described["seed"] == 3 and described["tables"] == 16 and described["bits"] == 4
    assert "genres=Sci-Fi" in described["tokens"]  # type: ignore[operator]
    other, _ = _encode(LSH.model_copy(update={"seed": 4}))
    assert not np.array_equal(other[:3], first[:3])


def test_lsh_buckets_put_similar_content_together() -> None:
    table, _ = _encode(LSH)
    shared_ab = (table[0] == table[1]).sum()  # two Star Wars action films
    shared_ac = (table[0] == table[2]).sum()  # vs a costume drama
    assert shared_ab > shared_ac


def test_lsh_feature_with_no_source_column_turns_off_or_fails_when_required() -> None:
    spec = LSH.model_copy(update={"source_columns": ["absent"]})
    assert fit_features([spec], ITEMS, "items") == []
    from training.features import FeatureSpecError

    with pytest.raises(FeatureSpecError, match="needs one of"):
        fit_features([spec.model_copy(update={"optional": False})], ITEMS, "items")


def test_untrained_items_read_the_unknown_id_row() -> None:
    config = TrainConfig(
        features=FeatureSpec(item=[FeatureColumn(column="genres", kind="multi_categorical")]),
        hidden_units=[],
        embedding_dim=8,
    )
    items = ITEMS.assign(genres=[["Action"], ["Action"], ["Action"], ["Drama"]])
    fitted = fit_features(config.features.item, items, "items")
    table = encode_table(fitted, items, "item_id", list(items["item_id"]))
    trained = np.array([True, False, False, True])
    tower = ItemTower(list(items["item_id"]), fitted, table, config, trained)
    vectors = np.asarray(tower(np.arange(1, 5)))
    # b and c: same features, no interactions → the same (unknown-row) vector; a differs.
    np.testing.assert_allclose(vectors[1], vectors[2], rtol=1e-6)
    assert not np.allclose(vectors[0], vectors[1])


def test_content_baselines_on_a_hand_case() -> None:
    catalog = Catalog(user_ids=["u"], item_ids=["a", "b", "c", "d"])
    content = content_matrix(ITEMS, catalog)
    np.testing.assert_allclose(np.linalg.norm(content[:3], axis=1), 1.0, rtol=1e-6)
    assert not content[3].any()
    # A user who saw Star Wars is closest to its sequel.
    x = np.array([[1, 0, 0, 0]], dtype=np.float32)
    scores = ContentKnnScorer(x, content)(np.array([0]))[0]
    assert scores[1] > scores[2]
    # Ridge popularity learns "action films are popular" from the warm items.
    predicted = ridge_popularity(content, np.array([50.0, 0.0, 1.0, 0.0]))
    assert predicted[1] > predicted[2]


def test_full_softmax_leaves_items_without_interactions_out() -> None:
    import math

    import tensorflow as tf

    from training.retrieval_task import full_softmax_loss

    users = np.array([[1.0, 0.0]], np.float32)
    items = np.array([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1]], np.float32)
    logits = users @ items.T / 0.5
    # Item 3 has no interactions: it is neither the positive nor a negative.
    expected = -(logits[0, 0] - math.log(np.exp(logits[0, :2]).sum()))
    got = full_softmax_loss(
        tf.constant(users), tf.constant(items), np.array([1]), 0.5, tf.constant([True, True, False])
    )
    assert float(got) == pytest.approx(expected, rel=1e-5)
    unmasked = float(full_softmax_loss(tf.constant(users), tf.constant(items), np.array([1]), 0.5))
    assert unmasked > float(got)


def test_item_bias_is_served_as_one_extra_dimension() -> None:
    from training.model import UserTower

    config = TrainConfig(
        features=FeatureSpec(item=[FeatureColumn(column="genres", kind="multi_categorical")]),
        hidden_units=[],
        embedding_dim=8,
        item_bias=True,
        use_user_features=False,
        history_length=3,
    )
    fitted = fit_features(config.features.item, ITEMS, "items")
    table = encode_table(fitted, ITEMS, "item_id", list(ITEMS["item_id"]))
    item_tower = ItemTower(list(ITEMS["item_id"]), fitted, table, config)
    assert item_tower.bias is not None
    item_tower(np.arange(1, 5))
    item_tower.bias.set_weights([np.ones((item_tower.bias.kernel.shape[0], 1)), np.array([0.5])])
    items = np.asarray(item_tower(np.arange(1, 5)))
    users = np.asarray(
        UserTower(["u", "v"], item_tower, [], {}, config)(
            {"user": np.array([1, 2]), "history": np.array([[1, 2, 0], [3, 0, 0]])}
        )
    )
    assert items.shape == (4, 9) and users.shape == (2, 9)
    np.testing.assert_allclose(users[:, 8], 1.0)
    np.testing.assert_allclose(np.linalg.norm(users[:, :8], axis=1), 1.0, rtol=1e-5)
    # The served inner product is the training logit times the temperature.
    bias = np.asarray(item_tower.bias(tf_inputs(item_tower)))[:, 0]
    np.testing.assert_allclose(items[:, 8], config.temperature * bias, rtol=1e-5)
    np.testing.assert_allclose(
        users @ items.T, users[:, :8] @ items[:, :8].T + config.temperature * bias, rtol=1e-5
    )


def tf_inputs(tower: ItemTower) -> object:
    """The concatenated id + feature embeddings the tower's head and bias read."""
    import tensorflow as tf

    rows = tf.range(1, 5, dtype=tf.int64)
    parts = [tower.id_embedding(tf.gather(tower.id_rows, rows))]
    assert tower.features is not None
    parts.extend(tower.features(rows))
    return tf.concat(parts, axis=-1)
