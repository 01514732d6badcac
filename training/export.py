"""The model artifact: what a training run writes, and its ``manifest.json``.

Directory layout (one immutable version in the artifact store, kind ``models``)::

    manifest.json        ModelManifest below, including size + SHA-256 of every file
    user_tower/          TensorFlow SavedModel; endpoint ``serve(user_id, history)``:
                         user_id [batch] string, history [batch, H] string item ids (most
                         recent first, "" padded; H ≤ manifest history_length is read)
                         → [batch, dim] float32 unit vectors (training/user_encoder.py)
    item_tower/          TensorFlow SavedModel; endpoint ``serve(features)``: [batch, W]
                         int32 feature indices (item_features.json's features side by side,
                         each ``width`` wide) → [batch, dim] item vectors of items known only
                         by their features (the unknown-id row), as the index's cold items
                         (training/item_encoder.py embeds items added after training)
    item_features.json   the fitted item features: [{"spec", "vocabulary", "boundaries"}],
                         what encodes an item's feature columns into those indices
    user_vectors.npy     [n_users, dim] float32, unit norm; row i belongs to user_ids.json[i],
                         computed from that user's latest history
    user_ids.json        list of external user ids
    item_vectors.npy     [n_items, dim] float32, unit norm; row i belongs to item_ids.json[i]
    item_ids.json        list of external item ids
    popular_items.json   [{"item_id", "count"}] most-interacted items first (fallback list)
    duplicates.json      the canonical-id map: duplicate item groups found before training,
                         each folded into its canonical id (``catalogue.canonical_map``);
                         item_ids.json holds canonical ids only. Always written (no groups:
                         an empty list), always covered by the manifest's checksums
    metrics.json         validation (second-to-last item) and test (last item) metrics,
                         chosen epoch, examples/s, popularity baseline
    training_curve.json  [{"stage", "epoch", "loss", "val_recall@10", …}] per epoch

``serving`` reads this layout by contract (docs/artifacts.md); it never imports this module.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import tensorflow as tf
from pydantic import BaseModel, ConfigDict

from artifacts.checksums import MANIFEST_NAME, FileEntry, list_files
from artifacts.store import ArtifactStore
from catalogue.canonical_map import EMPTY_MAP, CanonicalMap, write_canonical_map
from training.config import TrainConfig
from training.features import FittedFeature
from training.model import ItemTower, UserTower
from training.model import _masked_mean as masked_mean  # the tower's own pooling
from training.train import TrainedModel

MODEL_KIND = "models"
MODEL_SCHEMA = "recall.model/v1"
POPULAR_ITEMS_KEPT = 1000


class ModelManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_id: Literal["recall.model/v1"] = "recall.model/v1"
    model_version: str
    created_at: str
    embedding_dim: int
    metric: Literal["inner_product"] = "inner_product"
    normalized: bool = True
    vector_dtype: Literal["float32"] = "float32"
    user_count: int
    item_count: int
    data_source: str
    data_window: dict[str, int]
    counts: dict[str, int]
    history_length: int
    trained_on: str
    features: dict[str, list[dict[str, Any]]]
    train_config: dict[str, Any]
    metrics: dict[str, float]
    duplicate_groups: int = 0  # groups in duplicates.json (0 for models before the map)
    files: list[FileEntry]


def _write_json(path: Path, payload: object) -> None:
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


def export_user_tower(tower: UserTower, path: Path) -> None:
    """Save ``tower`` as a SavedModel whose ``serve(user_id, history)`` endpoint maps
    [batch] user ids and [batch, H] history item ids (most recent first) → [batch, dim]."""

    @tf.function(
        input_signature=[
            tf.TensorSpec(shape=[None], dtype=tf.string, name="user_id"),
            tf.TensorSpec(shape=[None, None], dtype=tf.string, name="history"),
        ]
    )
    def serve(user_id: tf.Tensor, history: tf.Tensor) -> tf.Tensor:
        return tower.embed_ids(user_id, history)

    module = tf.Module()
    # Everything the function captures must be an attribute of the saved object: the
    # variables (not the Keras model itself, whose own serving signature would be traced)
    # and the lookups' hash tables (the item lookup is the item tower's, shared).
    module.tower_variables = list(tower.variables)
    module.user_table = tower.lookup.lookup_table
    module.item_table = tower.item_lookup.lookup_table
    module.serve = serve
    tf.saved_model.save(module, str(path), signatures={"serve": serve})


def export_item_tower(tower: ItemTower, features: Sequence[FittedFeature], path: Path) -> None:
    """Save the item tower as a SavedModel whose ``serve(features)`` endpoint maps [batch, W]
    int32 feature indices (``features`` side by side, each ``width`` wide; 0 = missing) to
    [batch, dim], reading the unknown-id row as an item without interactions does."""
    widths = [f.width for f in features]

    @tf.function(
        input_signature=[tf.TensorSpec(shape=[None, None], dtype=tf.int32, name="features")]
    )
    def serve(indices: tf.Tensor) -> tf.Tensor:
        ids = tf.zeros(tf.shape(indices)[:1], dtype=tf.int64)
        parts = [tower.id_embedding(ids)]
        blocks = []
        if tower.features is not None:
            start = 0
            for width, embedding in zip(widths, tower.features.embeddings, strict=True):
                block = indices[:, start : start + width]
                blocks.append(block)
                parts.append(masked_mean(embedding(block), block))
                start += width
        inputs = tf.concat(parts, axis=-1)
        vectors = tower.head(inputs)
        if tower.bias is not None:
            # As ItemTower.call: the bias rides in one extra dimension.
            vectors = tf.concat([vectors, tower.config.temperature * tower.bias(inputs)], -1)
        if not tower.blend_on:
            return vectors
        # As ItemTower.call: an item without interactions has no closed-form branch rows.
        width = sum(int(t.shape[1]) for t in tower.branch_tables)
        served = [tf.zeros([tf.shape(vectors)[0], width], dtype=vectors.dtype), vectors]
        if tower.has_prior:
            # As ItemTower.call: the content prior from the same feature indices.
            served.append(tower.prior_of_blocks(blocks))
        return tf.concat(served, axis=-1)

    module = tf.Module()
    module.tower_variables = list(tower.variables)
    module.serve = serve
    tf.saved_model.save(module, str(path), signatures={"serve": serve})


def item_features_json(features: Sequence[FittedFeature]) -> list[dict[str, Any]]:
    """What item_features.json holds: each fitted feature's spec, vocabulary, boundaries."""
    return [
        {
            "spec": f.spec.model_dump(),
            "vocabulary": list(f.vocabulary),
            "boundaries": list(f.boundaries),
        }
        for f in features
    ]


def write_model_dir(
    model: TrainedModel,
    config: TrainConfig,
    out_dir: Path,
    model_version: str,
    data_source: str,
    canonical: CanonicalMap = EMPTY_MAP,
) -> ModelManifest:
    """Write every file of the artifact into ``out_dir`` (which must be empty) + manifest.

    ``canonical``: the duplicate groups merged before training (duplicates.json)."""
    user_vectors = model.user_vectors()
    item_vectors = model.item_vectors()
    np.save(out_dir / "user_vectors.npy", user_vectors.astype("<f4"))
    np.save(out_dir / "item_vectors.npy", item_vectors.astype("<f4"))
    _write_json(out_dir / "user_ids.json", model.user_ids)
    _write_json(out_dir / "item_ids.json", model.item_ids)
    popular = model.item_counts.head(POPULAR_ITEMS_KEPT)
    _write_json(
        out_dir / "popular_items.json",
        [{"item_id": str(i), "count": int(c)} for i, c in popular.items()],
    )
    _write_json(out_dir / "metrics.json", model.metrics)
    _write_json(out_dir / "training_curve.json", model.curve)
    write_canonical_map(out_dir, canonical)
    export_user_tower(model.user_tower, out_dir / "user_tower")
    _write_json(out_dir / "item_features.json", item_features_json(model.vocab.item_features))
    export_item_tower(model.item_tower, model.vocab.item_features, out_dir / "item_tower")
    manifest = ModelManifest(
        model_version=model_version,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        embedding_dim=int(user_vectors.shape[1]),
        normalized=config.normalize_items,
        user_count=len(model.user_ids),
        item_count=len(model.item_ids),
        data_source=data_source,
        data_window=model.data_window,
        counts=model.counts,
        history_length=config.input_history_length,
        trained_on=(
            "all interactions"
            if config.final_fit == "all"
            else "all but each user's last two interactions"
        ),
        features={
            "item": [f.describe() for f in model.vocab.item_features],
            "user": [f.describe() for f in model.vocab.user_features],
        },
        train_config=config.model_dump(),
        metrics=model.metrics,
        duplicate_groups=len(canonical),
        files=list_files(out_dir),
    )
    _write_json(out_dir / MANIFEST_NAME, manifest.model_dump())
    return manifest


def publish_model(
    model: TrainedModel,
    config: TrainConfig,
    store: ArtifactStore,
    model_version: str,
    data_source: str,
    *,
    set_latest: bool = True,
    canonical: CanonicalMap = EMPTY_MAP,
) -> str:
    """Write the artifact to a local staging directory, then publish it atomically.

    ``set_latest``: also move ``models/LATEST`` to it. The pipeline publishes without,
    and the model gate (``artifacts.model_gate``) moves LATEST once the model passed.
    ``canonical``: the duplicate groups merged before training, written as duplicates.json.

    Returns:
        The published artifact's URI.
    """
    with tempfile.TemporaryDirectory(prefix="recall-model-") as tmp:
        write_model_dir(model, config, Path(tmp), model_version, data_source, canonical)
        return store.publish(MODEL_KIND, model_version, Path(tmp), set_latest=set_latest)
