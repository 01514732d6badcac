"""Steps shared by the tests of the towers' closed-form branches (linear, kernel)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from training.config import TrainConfig
from training.data.schema import Dataset
from training.data.synthetic import generate
from training.export import write_model_dir
from training.train import TrainedModel, train_two_tower
from training.user_encoder import UserEncoder


def dense_matrix(frame: pd.DataFrame, users: list[str], items: list[str]) -> np.ndarray:
    """[len(users), len(items)] 0/1 float64 matrix of the (user_id, item_id) rows of ``frame``."""
    x = np.zeros((len(users), len(items)))
    for u, i in frame[["user_id", "item_id"]].itertuples(index=False):
        x[users.index(u), items.index(i)] = 1.0
    return x


def export_and_reload(
    model: TrainedModel, config: TrainConfig, out_dir: Path, version: str
) -> tuple[dict[str, Any], UserEncoder, np.ndarray]:
    """Export ``model`` to ``out_dir`` and load its user tower back; assert that it encodes
    users 0, 7 and 49 as the stored vectors. Returns (manifest, encoder, stored vectors)."""
    write_model_dir(model, config, out_dir, version, "synthetic")
    manifest = json.loads((out_dir / "manifest.json").read_text())
    encoder = UserEncoder.load(out_dir)
    stored = np.load(out_dir / "user_vectors.npy")
    rows = [0, 7, 49]
    served = encoder.encode([model.user_ids[r] for r in rows], [model.histories[r] for r in rows])
    np.testing.assert_allclose(served, stored[rows], atol=1e-5)
    return manifest, encoder, stored


def learnt_vectors(model: TrainedModel) -> tuple[np.ndarray, np.ndarray]:
    """(users, items) of the learnt towers alone: the blend switched off for the call."""
    model.user_tower.blend_on = model.item_tower.blend_on = False
    try:
        return model.user_vectors(), model.item_vectors()
    finally:
        model.user_tower.blend_on = model.item_tower.blend_on = True


def assert_served_is_the_blend(model: TrainedModel, parts: list[tuple[float, np.ndarray]]) -> None:
    """The served scores rank every user's trained items as Σ weight · z(scores) over
    ``parts`` ([n_users, n_items] score matrices), z taken per user over the trained items:
    equal up to a positive per-user scale and shift."""
    trained = np.asarray(model.item_tower.id_rows)[1:] > 0  # the spread is theirs

    def z(scores: np.ndarray) -> np.ndarray:
        scores = scores[:, trained]
        return (scores - scores.mean(1, keepdims=True)) / scores.std(1, keepdims=True)

    expected = sum(weight * z(scores) for weight, scores in parts)
    served = (model.user_vectors() @ model.item_vectors().T)[:, trained]
    for u in range(len(served)):
        assert np.corrcoef(served[u], expected[u])[0, 1] == pytest.approx(1.0, abs=1e-4)


def encode_items_added_after_training(
    config: TrainConfig, out_dir: Path, version: str
) -> tuple[np.ndarray, np.ndarray]:
    """Train ``config`` (1 epoch, item id dropout 0.2) on 40 synthetic users and items whose
    last 10 items have no interactions, export it to ``out_dir`` as ``version``, and encode
    those 10 from their features with the exported item tower.

    Returns (served [10, dim], the trained towers' rows of the same items [10, dim]).
    """
    from training.item_encoder import ItemEncoder

    data = generate(n_users=40, n_items=40, interactions_per_user=8)
    cold = [f"i{i}" for i in range(30, 40)]
    warm = data.interactions[~data.interactions["item_id"].isin(cold)]
    config = config.model_copy(update={"epochs": 1, "item_id_dropout": 0.2})
    model = train_two_tower(Dataset(warm, data.items, data.users, "synthetic"), config)
    write_model_dir(model, config, out_dir, version, "synthetic")
    items = data.items.set_index("item_id")
    rows = [
        {"genres": "|".join(items.loc[i, "genres"]), "year": str(items.loc[i, "year"])}
        for i in cold
    ]
    served = ItemEncoder.load(out_dir).encode(rows)
    trained = model.item_vectors()[[model.item_ids.index(i) for i in cold]]
    return served, trained
