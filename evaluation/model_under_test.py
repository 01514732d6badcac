"""The two-tower model under test: trained on a split's training part, scored exactly.

Training goes through the product's own entry point (``training.tasks.train``) on a data
directory holding only the split's training interactions (plus the items and users
tables), so the artifact evaluated is exactly what the pipeline would publish.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evaluation.catalog import Catalog
from serving.model_artifact import ModelArtifact, open_model_artifact
from training.data.schema import Dataset, write_dataset

_CONTENT = [
    {"column": "genres", "kind": "multi_categorical"},
    {"column": "year", "kind": "bucketized", "buckets": 10},
    {"column": "title", "kind": "text_tokens"},
]
_LSH = {
    "column": "content_lsh",
    "kind": "lsh_buckets",
    "source_columns": ["genres", "year", "title"],
    "tables": 8,
    "bits": 6,
}
_SET_TOWERS: dict[str, Any] = {
    "history_context": "all_other",
    "history_length": 200,
    "temperature": 0.1,
    "hidden_units": [256],
}
"""The learnt towers of the P1 variants: the user's items read as a set."""
_KERNEL: dict[str, Any] = {
    "kernel_max_users": 4096,
    "kernel_item_features": ["genres"],
    "linear_weight": 0.5,
}
"""The kernel branch (∞-AE over every training user and their genre profiles,
training/kernel_branch.py), the learnt part at half its weight. Depth, ridge, profile scale
and weight were chosen on P1's tuning splits (docs/quality.md)."""
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "ids-only": {"use_history": False, "use_item_features": False, "use_user_features": False},
    "features": {"use_history": False, "use_item_features": True, "use_user_features": True},
    "history": {"use_history": True, "use_item_features": False, "use_user_features": False},
    "features+history": {
        "use_history": True,
        "use_item_features": True,
        "use_user_features": True,
    },
    "set-history": {"history_context": "all_other", "history_length": 200},
    "mixed-history": {"history_context": "mixed", "history_length": 200},
    # The set-history towers plus the closed-form linear branch (training/linear_branch.py).
    "hybrid": {**_SET_TOWERS, "linear_rank": 128},
    # ... or the kernel branch instead of the linear one, with or without genre profiles.
    "hybrid-kernel": {**_SET_TOWERS, **_KERNEL},
    "hybrid-kernel-items-only": {**_SET_TOWERS, **_KERNEL, "kernel_item_features": []},
    "default+linear": {"linear_rank": 128},
    "default+kernel": _KERNEL,
    "hybrid-learnt-only": _SET_TOWERS,
    "default+prior": {"content_prior_weight": 0.5},
    "holdout-fit": {"final_fit": "holdout"},
    "all-data-fit": {"final_fit": "all"},
    # P3 ablation (cold items): the item tower's inputs; the user tower stays the default.
    "item-ids-only": {"use_item_features": False},
    "item-content": {"item_id_dropout": 0.5, "features": {"item": _CONTENT}},
    "item-content+lsh": {"item_id_dropout": 0.5, "features": {"item": [*_CONTENT, _LSH]}},
    # + the content prior (training/content_prior.py): content-predicted popularity served
    # as one more dimension, weighted against the learnt towers' z-scored score.
    "item-content+prior": {
        "item_id_dropout": 0.5,
        "features": {"item": _CONTENT},
        "content_prior_weight": 0.5,
    },
    "item-content+lsh+prior": {
        "item_id_dropout": 0.5,
        "features": {"item": [*_CONTENT, _LSH]},
        "content_prior_weight": 0.5,
    },
}
"""Ablation variants: name → the training config keys it sets (on top of ``epochs``).

``default`` is whatever the training config defaults to. The other keys belong to the
feature/history towers of issue 5; a training build without them rejects the variant
(TrainConfig forbids unknown keys) and the harness reports that instead of a number.
"""

TRAINING_CURVE = "training_curve.json"
"""Optional file of the model artifact: a list of per-epoch dicts such as
``{"epoch": 1, "loss": 5.2, "val_recall@10": 0.1, "val_ndcg@10": 0.05}``."""

EpochCallback = Callable[[int, int, float], None]


@dataclass(frozen=True)
class TrainedModel:
    """A published model artifact and what the evaluation reads from it."""

    variant: str
    uri: str
    artifact: ModelArtifact
    curve: list[dict[str, float | str]]

    @property
    def model_version(self) -> str:
        return self.artifact.model_version


def variant_config(name: str, epochs: int | None, seed: int) -> dict[str, Any]:
    """The training config dict for variant ``name`` (KeyError names the known ones)."""
    if name not in VARIANTS:
        raise KeyError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
    config: dict[str, Any] = {**VARIANTS[name], "seed": seed}
    if epochs is not None:
        config["epochs"] = epochs
    return config


def write_training_data(train: pd.DataFrame, dataset: Dataset, data_dir: Path) -> None:
    """A data directory with ``train`` as its interactions and ``dataset``'s other tables."""
    write_dataset(data_dir, train, dataset.items, dataset.users)


def train_model(
    data_dir: Path,
    artifact_root: str,
    variant: str,
    epochs: int | None,
    seed: int,
    on_epoch: EpochCallback | None = None,
) -> TrainedModel:
    """Train ``variant`` on ``data_dir`` with the product's trainer; open the artifact."""
    from training import tasks  # TensorFlow: imported only when a model is trained

    uri = tasks.train(data_dir, artifact_root, variant_config(variant, epochs, seed), on_epoch)
    artifact = open_model_artifact(Path(uri))
    return TrainedModel(variant, uri, artifact, read_training_curve(artifact.path))


def read_training_curve(model_dir: Path) -> list[dict[str, float | str]]:
    """The artifact's per-epoch curve, or [] when it has none.

    Numbers stay numbers; ``stage`` (e.g. "validate", "final") stays a string; anything
    else is dropped.
    """
    path = model_dir / TRAINING_CURVE
    if not path.is_file():
        return []
    rows: list[dict[str, float | str]] = []
    for row in json.loads(path.read_text()):
        point: dict[str, float | str] = {}
        for key, value in row.items():
            if key == "stage":
                point[key] = str(value)
            elif isinstance(value, int | float) and not isinstance(value, bool):
                point[str(key)] = float(value)
        rows.append(point)
    return rows


@dataclass(frozen=True)
class VectorScorer:
    """Exact inner-product scores of the artifact's user and item vectors.

    Items of the catalogue without a vector score -inf (never ranked); users without a
    vector get the artifact's popular-items list, as the server's fallback does.
    """

    user_vectors: np.ndarray  # [n_catalog_users, dim], zero rows for users without a vector
    has_vector: np.ndarray  # [n_catalog_users] bool
    item_vectors: np.ndarray  # [n_catalog_items, dim], zero rows for items without one
    item_known: np.ndarray  # [n_catalog_items] bool
    fallback: np.ndarray  # [n_catalog_items] float32 popularity scores, -inf when unlisted

    @classmethod
    def from_artifact(cls, artifact: ModelArtifact, catalog: Catalog) -> VectorScorer:
        dim = artifact.embedding_dim
        users = np.zeros((catalog.n_users, dim), dtype=np.float32)
        has_vector = np.zeros(catalog.n_users, dtype=bool)
        vectors = np.asarray(artifact.user_vectors(mmap=False), dtype=np.float32)
        for row, user in enumerate(artifact.user_ids()):
            target = catalog.user_index.get(user)
            if target is not None:
                users[target] = vectors[row]
                has_vector[target] = True
        items = np.zeros((catalog.n_items, dim), dtype=np.float32)
        cols = catalog.item_rows(artifact.item_ids())
        known = cols >= 0
        items[cols[known]] = artifact.item_vectors()[known]
        item_known = np.zeros(catalog.n_items, dtype=bool)
        item_known[cols[known]] = True
        fallback = np.full(catalog.n_items, -np.inf, dtype=np.float32)
        for entry in artifact.popular_items():
            col = catalog.item_index.get(str(entry["item_id"]))
            if col is not None:
                fallback[col] = float(entry["count"])
        return cls(users, has_vector, items, item_known, fallback)

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        scores = self.user_vectors[rows] @ self.item_vectors.T
        scores[:, ~self.item_known] = -np.inf
        cold = ~self.has_vector[rows]
        scores[cold] = self.fallback
        return np.asarray(scores, dtype=np.float32)
