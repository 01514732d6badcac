"""Run an exported item tower: an item's feature columns (as text) → item vector, for items
added after training (``RecallAdmin.UpsertItems``).

The refresher worker embeds fresh items with the serving model, the nightly fold-in
(``training.fresh_items``) with the model being indexed. TensorFlow loads here, on the
training side; the recall server never imports this module.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from artifacts.checksums import MANIFEST_NAME
from training.features import FeatureColumn, FittedFeature, encode_table

ITEM_TOWER_DIR = "item_tower"
ITEM_FEATURES_FILE = "item_features.json"


class ItemTowerMissing(RuntimeError):
    """The model artifact predates the exported item tower (no ``item_tower/``)."""


def read_item_features(model_dir: Path) -> list[FittedFeature]:
    """The fitted item features of a model artifact (item_features.json)."""
    payload = json.loads((model_dir / ITEM_FEATURES_FILE).read_text())
    return [
        FittedFeature(
            FeatureColumn.model_validate(f["spec"]),
            vocabulary=tuple(f["vocabulary"]),
            boundaries=tuple(float(b) for b in f["boundaries"]),
        )
        for f in payload
    ]


def feature_frame(
    columns: Sequence[str], rows: Sequence[Mapping[str, str]], content: Sequence[str] = ()
) -> pd.DataFrame:
    """An items table of ``rows`` (feature columns as text) with an ``item_id`` column
    0..n-1. A ``content`` column (an lsh_buckets source) whose every value is a number
    becomes numeric, as it was when read from Parquet at training (the content hash buckets
    numbers, not their digits); other columns stay text ("007" is not 7)."""
    frame = pd.DataFrame({c: [row.get(c) for row in rows] for c in columns}, index=range(len(rows)))
    for column in content:
        numbers = pd.to_numeric(frame[column], errors="coerce")
        if len(frame) and not numbers.isna().any():
            frame[column] = numbers
    frame["item_id"] = [str(i) for i in range(len(rows))]
    return frame


class ItemEncoder:
    """A loaded ``item_tower`` SavedModel with the features that encode its input."""

    def __init__(
        self, module: object, features: Sequence[FittedFeature], model_version: str, dim: int
    ) -> None:
        self._module = module  # owns the variables ``serve`` reads
        self._serve = module.serve  # type: ignore[attr-defined]
        self.features = list(features)
        self.model_version = model_version
        self.dim = dim

    @classmethod
    def load(cls, model_dir: Path) -> ItemEncoder:
        """Load from a verified local model artifact directory.

        Raises:
            ItemTowerMissing: the artifact has no exported item tower (an older model).
        """
        if not (model_dir / ITEM_TOWER_DIR).is_dir():
            raise ItemTowerMissing(f"{model_dir} has no {ITEM_TOWER_DIR}/ (exported before it)")
        manifest = json.loads((model_dir / MANIFEST_NAME).read_text())
        module = tf.saved_model.load(str(model_dir / ITEM_TOWER_DIR))
        return cls(
            module,
            read_item_features(model_dir),
            str(manifest["model_version"]),
            int(manifest["embedding_dim"]),
        )

    @property
    def columns(self) -> list[str]:
        """Every column the features read."""
        return list(dict.fromkeys(c for f in self.features for c in f.source_columns))

    def encode(self, rows: Sequence[Mapping[str, str]]) -> np.ndarray:
        """[B, dim] float32: one vector per row of feature columns (missing columns and
        unknown values encode as "missing", as at training)."""
        if not rows:
            return np.zeros((0, self.dim), dtype=np.float32)
        content = [
            c for f in self.features if f.spec.kind == "lsh_buckets" for c in f.source_columns
        ]
        frame = feature_frame(self.columns, rows, content)
        table = encode_table(self.features, frame, "item_id", list(frame["item_id"]))
        parts = [table[f.name] for f in self.features]
        indices = (
            np.concatenate(parts, axis=1) if parts else np.zeros((len(rows), 0), dtype=np.int32)
        )
        out = self._serve(tf.constant(indices, dtype=tf.int32))
        return np.asarray(out, dtype=np.float32)
