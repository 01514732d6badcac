"""The exported item tower (training/export.py, training/item_encoder.py): an item known
only by its features gets, from its feature columns as text, exactly the vector training
gave it; this is what the refresher writes for items added after training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.config import TrainConfig
from training.data.schema import Dataset
from training.data.synthetic import generate
from training.export import write_model_dir
from training.item_encoder import ItemEncoder, ItemTowerMissing
from training.train import train_two_tower

CONFIG = TrainConfig(
    epochs=1,
    batch_size=64,
    embedding_dim=8,
    id_embedding_dim=8,
    feature_embedding_dim=4,
    history_length=5,
    patience=1,
    item_id_dropout=0.2,
)


def test_cold_items_embed_from_their_feature_text_as_in_training(tmp_path: Path) -> None:
    data = generate(n_users=40, n_items=40, interactions_per_user=8)
    cold = {f"i{i}" for i in range(30, 40)}
    warm = data.interactions[~data.interactions["item_id"].isin(cold)]
    model = train_two_tower(Dataset(warm, data.items, data.users, "synthetic"), CONFIG)
    write_model_dir(model, CONFIG, tmp_path, "20261130T000000Z-abcdef", "synthetic")
    assert (tmp_path / "item_tower" / "saved_model.pb").is_file()

    encoder = ItemEncoder.load(tmp_path)
    assert encoder.model_version == "20261130T000000Z-abcdef"
    assert encoder.columns == ["genres", "year"]
    items = data.items.set_index("item_id")
    ids = sorted(cold)
    rows = [
        {"genres": "|".join(items.loc[i, "genres"]), "year": str(items.loc[i, "year"])} for i in ids
    ]
    served = encoder.encode(rows)
    trained = model.item_vectors()[[model.item_ids.index(i) for i in ids]]
    np.testing.assert_allclose(served, trained, atol=1e-5)
    # Features matter: two different rows give different vectors; none gives the
    # "nothing known" vector, the same for every such item.
    assert not np.allclose(served[0], served[1], atol=1e-4)
    blank = encoder.encode([{}, {"genres": "no-such-genre"}])
    np.testing.assert_allclose(blank[0], blank[1], atol=1e-6)
    assert encoder.encode([]).shape == (0, 8)


def test_a_model_without_an_item_tower_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ItemTowerMissing, match="item_tower"):
        ItemEncoder.load(tmp_path)
