"""Train the two towers with in-batch softmax on a leave-last-out split."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from training.config import TrainConfig
from training.data.schema import Dataset
from training.evaluation import leave_last_out, popularity_recall_at_k, recall_at_k
from training.model import build_tower
from training.retrieval_task import in_batch_softmax_loss

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, int, float], None]
"""Called after each epoch with (epoch, epochs, mean loss)."""


@dataclass
class TrainedModel:
    """Towers plus everything the model artifact is made of."""

    user_tower: keras.Model
    item_tower: keras.Model
    user_ids: list[str]
    item_ids: list[str]
    item_counts: pd.Series  # item_id → training interactions, most popular first
    metrics: dict[str, float]
    data_window: dict[str, int]
    counts: dict[str, int] = field(default_factory=dict)

    def user_vectors(self, batch: int = 8192) -> np.ndarray:
        """[n_users, dim] float32, row i for ``user_ids[i]``; unit norm."""
        return _embed(self.user_tower, self.user_ids, batch)

    def item_vectors(self, batch: int = 8192) -> np.ndarray:
        """[n_items, dim] float32, row i for ``item_ids[i]``; unit norm."""
        return _embed(self.item_tower, self.item_ids, batch)


def _embed(tower: keras.Model, ids: list[str], batch: int) -> np.ndarray:
    parts = [
        np.asarray(tower(tf.constant(ids[i : i + batch]), training=False), dtype=np.float32)
        for i in range(0, len(ids), batch)
    ]
    return np.concatenate(parts, axis=0)


def train_two_tower(
    dataset: Dataset, config: TrainConfig, on_epoch: EpochCallback | None = None
) -> TrainedModel:
    """Fit user and item towers on all but each user's last interaction; evaluate on those.

    Vocabularies are the users and items present in the training split; items never
    interacted with get no vector (they cannot be learnt from ids alone).
    """
    keras.utils.set_random_seed(config.seed)
    split = leave_last_out(dataset.interactions)
    train = split.train
    item_counts = train["item_id"].value_counts()
    user_ids = sorted(train["user_id"].unique().tolist())
    item_ids = sorted(item_counts.index.tolist())
    user_tower = build_tower(user_ids, config.embedding_dim, "user_tower")
    item_tower = build_tower(item_ids, config.embedding_dim, "item_tower")

    log_q = np.log(item_counts / item_counts.sum()).astype(np.float32)
    examples = tf.data.Dataset.from_tensor_slices(
        (
            user_tower.lookup(tf.constant(train["user_id"].to_numpy(dtype=str))),
            item_tower.lookup(tf.constant(train["item_id"].to_numpy(dtype=str))),
            log_q.reindex(train["item_id"]).to_numpy(),
        )
    )
    batches = (
        examples.shuffle(len(train), seed=config.seed, reshuffle_each_iteration=True)
        .batch(config.batch_size, drop_remainder=len(train) > config.batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    optimizer = keras.optimizers.Adam(learning_rate=config.learning_rate)
    # Build the towers so their variables exist before the traced step.
    user_tower(tf.constant(user_ids[:1]))
    item_tower(tf.constant(item_ids[:1]))
    variables = user_tower.trainable_variables + item_tower.trainable_variables

    @tf.function(reduce_retracing=True)
    def step(users: tf.Tensor, items: tf.Tensor, item_log_q: tf.Tensor) -> tf.Tensor:
        """users, items: [batch] int64 vocabulary indices; item_log_q: [batch] float32."""
        with tf.GradientTape() as tape:
            loss = in_batch_softmax_loss(
                user_tower.embed_indices(users),
                item_tower.embed_indices(items),
                items,
                config.temperature,
                item_log_q if config.logq_correction else None,
            )
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return loss

    started = time.perf_counter()
    final_loss = float("nan")
    for epoch in range(1, config.epochs + 1):
        losses = [float(step(u, i, q)) for u, i, q in batches]
        final_loss = float(np.mean(losses))
        log.info("epoch %d/%d loss %.4f", epoch, config.epochs, final_loss)
        if on_epoch:
            on_epoch(epoch, config.epochs, final_loss)
    train_seconds = time.perf_counter() - started

    model = TrainedModel(
        user_tower=user_tower,
        item_tower=item_tower,
        user_ids=user_ids,
        item_ids=item_ids,
        item_counts=item_counts,
        metrics={},
        data_window={
            "first_timestamp": int(dataset.interactions["timestamp"].min()),
            "last_timestamp": int(dataset.interactions["timestamp"].max()),
        },
        counts={
            "interactions": len(dataset.interactions),
            "train_interactions": len(train),
            "test_users": len(split.test),
            "users": len(user_ids),
            "items": len(item_ids),
        },
    )
    model.metrics = {
        "final_loss": final_loss,
        "train_seconds": round(train_seconds, 3),
        **_evaluate(model, split.train, split.test, config.eval_k),
    }
    return model


def _evaluate(
    model: TrainedModel, train: pd.DataFrame, test: pd.DataFrame, ks: list[int]
) -> dict[str, float]:
    ks = [k for k in ks if k <= len(model.item_ids)] or [len(model.item_ids)]
    if test.empty:
        return {}
    user_row = {u: r for r, u in enumerate(model.user_ids)}
    item_row = {i: r for r, i in enumerate(model.item_ids)}
    users = test["user_id"].tolist()
    all_user_vectors = model.user_vectors()
    seen_by_user = train.groupby("user_id")["item_id"].agg(list).to_dict()
    seen = [np.array([item_row[i] for i in seen_by_user[u]], dtype=np.int64) for u in users]
    metrics = recall_at_k(
        all_user_vectors[[user_row[u] for u in users]],
        model.item_vectors(),
        np.array([item_row[i] for i in test["item_id"]]),
        seen,
        ks,
    )
    metrics.update(popularity_recall_at_k(train, test, ks))
    return metrics
