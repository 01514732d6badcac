"""Fit the towers: pick epochs on a temporal validation split, then refit on everything.

1. ``validate``: train on all but each user's last two interactions; after each epoch score
   the second-to-last one (exact search, the user's earlier items excluded); early stopping
   keeps the best epoch. The same model scores the last interaction as the *test* metrics,
   with the user's history including the validation item (as a served user's would).
2. ``final_fit="all"``: train a fresh model on every interaction for the chosen number of
   epochs; that model is published, so every user's most recent action reaches production.
   ``final_fit="holdout"`` publishes the validation-stage model instead.

Training examples are (user, history before the interaction, interaction's item): the user
tower learns to predict the next item from the most recent ones.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from training.config import TrainConfig
from training.content_prior import fit_content_prior
from training.data.schema import Dataset
from training.evaluation import leave_last_out, popularity_recall_at_k, ranking_metrics
from training.features import FittedFeature, encode_table, fit_features
from training.histories import latest_histories
from training.kernel_branch import anchor_count, fit_kernel_branch
from training.linear_branch import fit_linear_branch
from training.model import ItemTower, TwoTowerModel, UserTower, attach_blend

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, int, float], None]
"""Called after each epoch with (epoch, epochs, mean loss)."""


@dataclass(frozen=True)
class Vocabulary:
    """Users and items of one training run, and the features fitted on its tables."""

    user_ids: list[str]
    item_ids: list[str]
    item_features: list[FittedFeature]
    user_features: list[FittedFeature]
    item_feature_table: dict[str, np.ndarray]  # name → [n_items, width] int32
    user_feature_table: dict[str, np.ndarray]  # name → [n_users, width] int32

    @classmethod
    def build(cls, dataset: Dataset, config: TrainConfig) -> Vocabulary:
        """Items: every interacted item plus every item of the items table (an item with
        features but no interactions still gets a vector). Users: every interacting user."""
        interactions = dataset.interactions
        items = set(interactions["item_id"])
        if dataset.items is not None:
            items |= set(dataset.items["item_id"])
        item_ids = sorted(items)
        user_ids = sorted(set(interactions["user_id"]))
        item_features = (
            fit_features(config.features.item, dataset.items, "items")
            if config.use_item_features
            else []
        )
        user_features = (
            fit_features(config.features.user, dataset.users, "users")
            if config.use_user_features
            else []
        )
        return cls(
            user_ids=user_ids,
            item_ids=item_ids,
            item_features=item_features,
            user_features=user_features,
            item_feature_table=encode_table(item_features, dataset.items, "item_id", item_ids),
            user_feature_table=encode_table(user_features, dataset.users, "user_id", user_ids),
        )


@dataclass
class Towers:
    user: UserTower
    item: ItemTower
    model: TwoTowerModel


def build_towers(vocab: Vocabulary, item_counts: pd.Series, config: TrainConfig) -> Towers:
    """Fresh towers; ``item_counts`` (item_id → training interactions) sets the logQ table."""
    counts = item_counts.reindex(vocab.item_ids).fillna(0).to_numpy(dtype=np.float64)
    item_tower = ItemTower(
        vocab.item_ids,
        vocab.item_features,
        vocab.item_feature_table,
        config,
        counts > 0,
        _kernel_columns(config, len(vocab.user_ids), len(vocab.item_ids)),
    )
    user_tower = UserTower(
        vocab.user_ids, item_tower, vocab.user_features, vocab.user_feature_table, config
    )
    smoothed = counts + 1.0
    model = TwoTowerModel(user_tower, item_tower, np.log(smoothed / smoothed.sum()), config)
    # One eager call builds every layer before fit traces the training step.
    history = np.zeros((1, config.history_length), dtype=np.int64)
    model({"user": np.zeros(1, dtype=np.int64), "history": history})
    item_tower(np.zeros(1, dtype=np.int64))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate))
    return Towers(user_tower, item_tower, model)


def history_matrix(user_rows: np.ndarray, item_rows: np.ndarray, length: int) -> np.ndarray:
    """For interactions sorted by (user, time): the items each one's user had before it.

    Args:
        user_rows, item_rows: [n] vocabulary indices, grouped by user, oldest first.
    Returns:
        [n, length] int64; row r, column l is the item ``l + 1`` interactions before r of
        the same user (0 = none): most recent first, 0-padded.
    """
    n = len(user_rows)
    out = np.zeros((n, length), dtype=np.int64)
    for lag in range(1, min(length, n) + 1):
        same_user = np.zeros(n, dtype=bool)
        same_user[lag:] = user_rows[lag:] == user_rows[:-lag]
        out[lag:, lag - 1] = np.where(same_user[lag:], item_rows[:-lag], 0)
    return out


def other_items_matrix(user_rows: np.ndarray, item_rows: np.ndarray, length: int) -> np.ndarray:
    """For interactions sorted by (user, time): each one's user's *other* items.

    Returns:
        [n, length] int64: row r holds the user's most recent items except r's own, most
        recent first, 0-padded.
    """
    out = np.zeros((len(user_rows), length), dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, user_rows[1:] != user_rows[:-1]])
    ends = np.r_[starts[1:], len(user_rows)]
    positions = np.arange(length)[None, :]
    for start, end in zip(starts, ends, strict=True):
        recent = item_rows[start:end][::-1]  # most recent first
        own = np.arange(end - start)[::-1][:, None]  # row's own position in ``recent``
        index = positions + (positions >= own)
        valid = index < len(recent)
        out[start:end] = np.where(valid, recent[np.minimum(index, len(recent) - 1)], 0)
    return out


def history_indices(
    histories: Sequence[Sequence[str]], item_index: dict[str, int], length: int
) -> np.ndarray:
    """[len(histories), length] int64 item vocabulary indices of each history (most recent
    first, as given), truncated to ``length`` and 0-padded; unknown items are 0."""
    out = np.zeros((len(histories), length), dtype=np.int64)
    for r, items in enumerate(histories):
        recent = items[:length]
        out[r, : len(recent)] = [item_index.get(i, 0) for i in recent]
    return out


def user_histories(
    interactions: pd.DataFrame, users: Sequence[str], length: int
) -> list[list[str]]:
    """Each user's ``length`` most recent item ids, most recent first (what the history
    lists in Redis hold: ``training.histories.latest_histories``)."""
    recent = latest_histories(interactions, length)
    return [recent.get(u, []) for u in users]


def training_examples(
    interactions: pd.DataFrame, vocab: Vocabulary, config: TrainConfig
) -> dict[str, np.ndarray]:
    """user [n], history [n, H], item [n] vocabulary indices, one row per interaction."""
    ordered = interactions.sort_values(["user_id", "timestamp"], kind="stable")
    user_index = {u: i + 1 for i, u in enumerate(vocab.user_ids)}
    item_index = {u: i + 1 for i, u in enumerate(vocab.item_ids)}
    users = ordered["user_id"].map(user_index).to_numpy(dtype=np.int64)
    items = ordered["item_id"].map(item_index).to_numpy(dtype=np.int64)
    length = config.history_length
    if config.history_context == "before":
        history = history_matrix(users, items, length)
    elif config.history_context == "all_other":
        history = other_items_matrix(users, items, length)
    else:
        before = np.random.default_rng(config.seed).random(len(users)) < 0.5
        history = np.where(
            before[:, None],
            history_matrix(users, items, length),
            other_items_matrix(users, items, length),
        )
    return {"user": users, "history": history, "item": items}


def _batches(examples: dict[str, np.ndarray], config: TrainConfig) -> tf.data.Dataset:
    n = len(examples["item"])
    return (
        tf.data.Dataset.from_tensor_slices(examples)
        .shuffle(n, seed=config.seed, reshuffle_each_iteration=True)
        .batch(config.batch_size, drop_remainder=n > config.batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )


@dataclass(frozen=True)
class HeldOut:
    """Users' held-out items with the history their vector is computed from.

    ``users``: [n] user vocabulary indices; ``history``: [n, H] item indices, most recent
    first; ``targets``: [n] item indices; ``seen``: per user, item rows (0-based) to exclude.
    """

    users: np.ndarray
    history: np.ndarray
    targets: np.ndarray
    seen: list[np.ndarray]

    @classmethod
    def build(
        cls, before: pd.DataFrame, held_out: pd.DataFrame, vocab: Vocabulary, length: int
    ) -> HeldOut:
        user_index = {u: i + 1 for i, u in enumerate(vocab.user_ids)}
        item_index = {u: i + 1 for i, u in enumerate(vocab.item_ids)}
        users = held_out["user_id"].tolist()
        seen_by_user = before.groupby("user_id")["item_id"].agg(list).to_dict()
        return cls(
            users=np.array([user_index.get(u, 0) for u in users], dtype=np.int64),
            history=history_indices(user_histories(before, users, length), item_index, length),
            targets=held_out["item_id"].map(item_index).to_numpy(dtype=np.int64),
            seen=[
                np.array([item_index[i] - 1 for i in seen_by_user.get(u, [])], dtype=np.int64)
                for u in users
            ],
        )


def _embed_users(tower: UserTower, users: np.ndarray, history: np.ndarray) -> np.ndarray:
    parts = [
        np.asarray(
            tower({"user": users[i : i + 4096], "history": history[i : i + 4096]}),
            dtype=np.float32,
        )
        for i in range(0, len(users), 4096)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, tower.config.embedding_dim))


def _embed_items(tower: ItemTower, n_items: int) -> np.ndarray:
    return np.asarray(tower(tf.range(1, n_items + 1, dtype=tf.int64)), dtype=np.float32)


def score_held_out(
    towers: Towers, held_out: HeldOut, n_items: int, ks: Sequence[int], prefix: str
) -> dict[str, float]:
    """Exact-search metrics of ``held_out`` (``{prefix}recall@10``, ``{prefix}ndcg@10``…)."""
    if len(held_out.targets) == 0:
        return {}
    metrics = ranking_metrics(
        _embed_users(towers.user, held_out.users, held_out.history),
        _embed_items(towers.item, n_items),
        held_out.targets - 1,
        held_out.seen,
        [k for k in ks if k <= n_items] or [n_items],
    )
    return {f"{prefix}{name}": value for name, value in metrics.items()}


class ValidationMetrics(keras.callbacks.Callback):
    """After each epoch: exact-search metrics on the validation items, into ``logs``
    (so EarlyStopping can watch them), plus the learning curve and progress."""

    def __init__(
        self,
        towers: Towers,
        held_out: HeldOut | None,
        n_items: int,
        config: TrainConfig,
        on_epoch: EpochCallback | None,
        stage: str,
    ) -> None:
        super().__init__()
        self.towers = towers
        self.held_out = held_out
        self.n_items = n_items
        self.config = config
        self.on_epoch = on_epoch
        self.stage = stage
        self.curve: list[dict[str, Any]] = []
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs if logs is not None else {}
        if self.held_out is not None:
            logs.update(
                score_held_out(self.towers, self.held_out, self.n_items, self.config.eval_k, "val_")
            )
        loss = float(logs.get("loss", float("nan")))
        point: dict[str, Any] = {"stage": self.stage, "epoch": epoch + 1, "loss": loss}
        point.update({k: float(v) for k, v in logs.items() if k.startswith("val_")})
        point["seconds"] = round(time.perf_counter() - self.started, 2)
        self.curve.append(point)
        shown = ", ".join(f"{k} {v:.4f}" for k, v in point.items() if k.startswith("val_"))
        log.info(
            "%s epoch %d/%d loss %.4f%s",
            self.stage,
            epoch + 1,
            self.config.epochs,
            loss,
            f" ({shown})" if shown else "",
        )
        if self.on_epoch:
            self.on_epoch(epoch + 1, self.params.get("epochs", self.config.epochs), loss)


@dataclass
class TrainedModel:
    """Towers plus everything the model artifact is made of."""

    user_tower: UserTower
    item_tower: ItemTower
    vocab: Vocabulary
    config: TrainConfig
    histories: list[list[str]]  # per user (vocab order): most recent item ids first
    item_counts: pd.Series  # item_id → training interactions, most popular first
    metrics: dict[str, float]
    data_window: dict[str, int]
    counts: dict[str, int] = field(default_factory=dict)
    curve: list[dict[str, Any]] = field(default_factory=list)

    @property
    def user_ids(self) -> list[str]:
        return self.vocab.user_ids

    @property
    def item_ids(self) -> list[str]:
        return self.vocab.item_ids

    def user_vectors(self) -> np.ndarray:
        """[n_users, dim] float32, row i for ``user_ids[i]`` from its latest history."""
        item_index = {u: i + 1 for i, u in enumerate(self.vocab.item_ids)}
        history = history_indices(self.histories, item_index, self.config.input_history_length)
        users = np.arange(1, len(self.user_ids) + 1, dtype=np.int64)
        return _embed_users(self.user_tower, users, history)

    def item_vectors(self) -> np.ndarray:
        """[n_items, dim] float32, row i for ``item_ids[i]``; unit norm."""
        return _embed_items(self.item_tower, len(self.item_ids))


def _fit(
    interactions: pd.DataFrame,
    vocab: Vocabulary,
    config: TrainConfig,
    epochs: int,
    held_out: HeldOut | None,
    on_epoch: EpochCallback | None,
    stage: str,
) -> tuple[Towers, ValidationMetrics]:
    keras.utils.set_random_seed(config.seed)
    towers = build_towers(vocab, interactions["item_id"].value_counts(), config)
    metrics = ValidationMetrics(towers, held_out, len(vocab.item_ids), config, on_epoch, stage)
    callbacks: list[keras.callbacks.Callback] = [metrics]
    if held_out is not None:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=config.early_stopping_metric,
                mode="max",
                patience=config.patience,
                restore_best_weights=True,
            )
        )
    towers.model.fit(
        _batches(training_examples(interactions, vocab, config), config),
        epochs=epochs,
        callbacks=callbacks,
        shuffle=False,  # the dataset reshuffles itself every epoch
        verbose=config.verbose,
    )
    return towers, metrics


def _kernel_columns(config: TrainConfig, n_users: int, n_items: int) -> int:
    """The kernel branch's anchor columns for this run (0: off), saying why when capped."""
    columns = anchor_count(config.kernel_max_users, n_users, n_items, config.linear_max_items)
    if config.kernel_max_users and not columns:
        log.warning(
            "kernel branch off: %d items > linear_max_items %d (its anchor table is "
            "items × anchors)",
            n_items,
            config.linear_max_items,
        )
    return columns


def _linear_branch_wanted(config: TrainConfig, n_items: int) -> bool:
    """Whether this run fits the linear branch (on, and the catalogue small enough)."""
    if config.linear_rank == 0:
        return False
    if n_items > config.linear_max_items:
        log.warning(
            "linear branch off: %d items > linear_max_items %d (EASE is O(n³))",
            n_items,
            config.linear_max_items,
        )
        return False
    return True


def _attach_blend(
    towers: Towers,
    interactions: pd.DataFrame,
    vocab: Vocabulary,
    config: TrainConfig,
    linear: bool,
) -> None:
    """Fit the closed-form parts on ``interactions`` and blend them into the towers."""
    started = time.perf_counter()
    branch = (
        fit_linear_branch(interactions, vocab.item_ids, config.linear_rank, config.linear_l2)
        if linear
        else None
    )
    kernel = (
        fit_kernel_branch(
            interactions,
            vocab.item_ids,
            towers.item.kernel_size,
            config.kernel_depth,
            config.kernel_reg,
            config.seed,
            towers.item.kernel_profiles,
            config.kernel_feature_scale,
        )
        if towers.item.kernel_size
        else None
    )
    prior = None
    if towers.item.has_prior:
        counts = interactions["item_id"].value_counts().reindex(vocab.item_ids).fillna(0)
        prior = fit_content_prior(
            vocab.item_features,
            vocab.item_feature_table,
            counts.to_numpy(dtype=np.float64),
            counts.to_numpy() > 0,
            config.content_prior_l2,
        )
        if prior is None:
            log.warning("content prior off: the item features predict no popularity spread")
    attach_blend(towers.user, towers.item, branch, prior, kernel)
    log.info(
        "blended parts: linear branch %s, kernel branch %s, content prior %s (%.1f s)",
        f"rank {branch.rank}, λ {config.linear_l2:g}" if branch is not None else "off",
        (
            f"{int(kernel.anchor_valid.sum())} anchors, depth {config.kernel_depth}, "
            f"reg {config.kernel_reg:g}, feature profiles of {len(towers.item.kernel_profiles)}"
            f" of {config.kernel_item_features or '[]'}"
        )
        if kernel is not None
        else "off",
        f"weight {config.content_prior_weight:g}" if prior is not None else "off",
        time.perf_counter() - started,
    )


def train_two_tower(
    dataset: Dataset, config: TrainConfig, on_epoch: EpochCallback | None = None
) -> TrainedModel:
    """Validate (choose epochs), measure on the last interactions, then the final fit."""
    started = time.perf_counter()
    interactions = dataset.interactions
    vocab = Vocabulary.build(dataset, config)
    test_split = leave_last_out(interactions)
    val_split = leave_last_out(test_split.train)
    length = config.input_history_length
    validation = HeldOut.build(val_split.train, val_split.test, vocab, length)
    test = HeldOut.build(test_split.train, test_split.test, vocab, length)
    linear = _linear_branch_wanted(config, len(vocab.item_ids))

    towers, progress = _fit(
        val_split.train, vocab, config, config.epochs, validation, on_epoch, "validate"
    )
    blend = linear or towers.item.has_prior or towers.item.kernel_size > 0
    curve = list(progress.curve)
    monitored = [p.get(config.early_stopping_metric, float("nan")) for p in curve]
    best_epoch = int(np.nanargmax(monitored)) + 1 if validation.targets.size else len(curve)
    best = curve[best_epoch - 1] if curve else {}
    n_items = len(vocab.item_ids)
    metrics: dict[str, float] = {
        "best_epoch": float(best_epoch),
        **{k: v for k, v in best.items() if k.startswith("val_")},
        **score_held_out(towers, test, n_items, config.eval_k, ""),
        **popularity_recall_at_k(test_split.train, test_split.test, config.eval_k),
    }
    if blend:
        # The test metrics are the served model's: learnt towers plus the closed-form
        # parts fitted on the same interactions; the learnt towers alone keep a "learnt_"
        # prefix.
        metrics.update({f"learnt_{k}": metrics[k] for k in list(metrics) if "@" in k})
        _attach_blend(towers, test_split.train, vocab, config, linear)
        metrics.update(score_held_out(towers, test, n_items, config.eval_k, ""))
    train_interactions = len(val_split.train)
    fitted_on = val_split.train
    if config.final_fit == "all":
        towers, progress = _fit(interactions, vocab, config, best_epoch, None, on_epoch, "final")
        curve.extend(progress.curve)
        train_interactions = len(interactions)
        fitted_on = interactions
    if blend:
        _attach_blend(towers, fitted_on, vocab, config, linear)
    seconds = time.perf_counter() - started
    examples = sum(
        (len(val_split.train) if p["stage"] == "validate" else len(interactions)) for p in curve
    )
    metrics["train_seconds"] = round(seconds, 3)
    metrics["examples_per_second"] = round(examples / max(seconds, 1e-9), 1)
    metrics["final_loss"] = curve[-1]["loss"] if curve else float("nan")
    return TrainedModel(
        user_tower=towers.user,
        item_tower=towers.item,
        vocab=vocab,
        config=config,
        # Vectors always come from each user's latest history: it is an input, not training.
        histories=user_histories(interactions, vocab.user_ids, length),
        item_counts=interactions["item_id"].value_counts(),
        metrics=metrics,
        data_window={
            "first_timestamp": int(interactions["timestamp"].min()),
            "last_timestamp": int(interactions["timestamp"].max()),
        },
        counts={
            "interactions": len(interactions),
            "train_interactions": train_interactions,
            "validation_users": len(validation.targets),
            "test_users": len(test.targets),
            "users": len(vocab.user_ids),
            "items": n_items,
        },
        curve=curve,
    )
