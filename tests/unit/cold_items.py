"""A shared step of the towers' tests: items added after training, through the export."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.config import TrainConfig
from training.data.schema import Dataset
from training.data.synthetic import generate
from training.export import write_model_dir
from training.train import train_two_tower


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
