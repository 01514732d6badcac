"""The two towers and the retrieval model that trains them (``compute_loss``, as in TFRS).

- ``ItemTower``: item id embedding + the item's feature embeddings (genres, year bucket, …)
  → dense → L2 normalisation. The catalogue's feature indices live in the tower as constant
  tables, so the tower's input is just the item's vocabulary index.
- ``UserTower``: a recency-weighted mean of the user's most recent ``history_length``
  items' id embeddings (the *same* table as the item tower's), the user id embedding (with
  dropout in training, so users known only by their history still work) and the user's
  feature embeddings → dense → L2 normalisation.

Both emit ``[batch, dim]`` float32 of unit norm: a dot product of a user and an item vector
is their cosine similarity. With ``item_bias`` both get one more dimension (user: 1, item:
temperature × a bias learnt from the item's inputs), so the inner product also carries the
item's learnt popularity, which is what ranks items that have no interactions yet.

After training, closed-form parts may be *blended* in (``attach_blend``; the towers then
return the served vectors): the linear branch (``training/linear_branch.py``) and the
kernel branch (``training/kernel_branch.py``), leading dimensions, and the content prior
(``training/content_prior.py``, one trailing dimension, non-zero for items without
interactions only).
Each part is z-scored per user over the catalogue, so the served vectors are
``user = [lin/σ_lin, ker/σ_ker, w·learnt/σ_learnt, w·w_prior]`` and
``item = [Q[j], x_j, learnt(j), prior(j)]`` (``w`` = ``linear_weight`` with a branch,
else 1).
Vocabulary index 0 is "unknown" everywhere (out-of-vocabulary id, missing feature value,
history padding).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from training.config import TrainConfig
from training.content_prior import ContentPrior
from training.features import FittedFeature
from training.kernel_branch import (
    BIAS_VARIANCE,
    WEIGHT_VARIANCE,
    KernelBranch,
    profile_tables,
)
from training.linear_branch import LinearBranch, item_covariance
from training.retrieval_task import retrieval_loss

HISTORY_PAD = ""
"""History padding in string form (maps to vocabulary index 0, masked out)."""


def _lookup(vocabulary: Sequence[str], name: str) -> keras.layers.StringLookup:
    return keras.layers.StringLookup(
        vocabulary=list(vocabulary), mask_token=None, num_oov_indices=1, name=name
    )


def _embedding(rows: int, dim: int, name: str) -> keras.layers.Embedding:
    return keras.layers.Embedding(
        rows, dim, embeddings_initializer=keras.initializers.RandomNormal(stddev=0.05), name=name
    )


def _masked_mean(embedded: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
    """[B, L, d] embeddings of [B, L] indices → [B, d] mean over non-zero indices (0 if none)."""
    mask = tf.cast(tf.not_equal(indices, 0), embedded.dtype)[..., tf.newaxis]
    return tf.reduce_sum(embedded * mask, axis=1) / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)


def _head(hidden: Sequence[int], dim: int, name: str, normalize: bool = True) -> keras.Sequential:
    layers: list[keras.layers.Layer] = [
        keras.layers.Dense(units, activation="relu", name=f"{name}_hidden{i}")
        for i, units in enumerate(hidden)
    ]
    layers.append(keras.layers.Dense(dim, name=f"{name}_out"))
    if normalize:
        layers.append(keras.layers.UnitNormalization(name=f"{name}_l2"))
    return keras.Sequential(layers, name=name)


class FeatureEmbeddings(keras.layers.Layer):
    """One embedding table per feature over a constant [n_rows, width] index table.

    ``call(rows)``: [B] row indices into the table → list of [B, d] (mean over multi-values).
    """

    def __init__(
        self,
        features: Sequence[FittedFeature],
        table: Mapping[str, np.ndarray],
        dim: int,
        name: str,
    ) -> None:
        super().__init__(name=name)
        self.names = [f.name for f in features]
        self.tables = [tf.constant(table[f.name], dtype=tf.int32) for f in features]
        self.embeddings = [_embedding(f.size, dim, f"{name}_{f.name}") for f in features]

    def build(self, input_shape: Any = None) -> None:
        """Sub-layers build on their first call (shapes are known only then)."""
        self.built = True

    def call(self, rows: tf.Tensor) -> list[tf.Tensor]:
        out = []
        for table, embedding in zip(self.tables, self.embeddings, strict=True):
            indices = tf.gather(table, rows)  # [B, width]
            out.append(_masked_mean(embedding(indices), indices))
        return out


class ItemTower(keras.Model):
    """[B] item vocabulary indices (``call``) or string ids (``embed_ids``) → [B, dim].

    An item without training interactions (``trained`` False: in the items table only)
    reads the unknown id row instead of its own, never-trained one; with
    ``item_id_dropout`` that row is trained to mean "an item known by its features".
    """

    def __init__(
        self,
        item_ids: Sequence[str],
        features: Sequence[FittedFeature],
        feature_table: Mapping[str, np.ndarray],
        config: TrainConfig,
        trained: np.ndarray | None = None,
        kernel_size: int = 0,
    ) -> None:
        """``kernel_size``: columns of the kernel branch (its anchor users; 0: none)."""
        super().__init__(name="item_tower")
        self.config = config
        self.lookup = _lookup(item_ids, "item_lookup")
        self.id_embedding = _embedding(len(item_ids) + 1, config.id_embedding_dim, "item_id")
        rows = np.arange(len(item_ids) + 1, dtype=np.int64)
        if trained is not None:
            rows[1:][~np.asarray(trained, dtype=bool)] = 0
        self.id_rows = tf.constant(rows)  # vocabulary index → id embedding row
        # Row 0 of the feature table belongs to the unknown id: prepend an all-missing row.
        padded = {k: np.concatenate([np.zeros_like(v[:1]), v]) for k, v in feature_table.items()}
        self.features = (
            FeatureEmbeddings(features, padded, config.feature_embedding_dim, "item_features")
            if features
            else None
        )
        self.head = _head(
            config.hidden_units, config.embedding_dim, "item_head", config.normalize_items
        )
        self.bias = (
            keras.layers.Dense(1, kernel_initializer="zeros", name="item_bias")
            if config.item_bias
            else None
        )
        # The closed-form linear branch's item table (training/linear_branch.py): zeros
        # until attach_blend fills it after training; only then does call use it.
        self.linear_rank = min(config.linear_rank, len(item_ids))
        self.linear_rows = (
            self.add_weight(
                name="linear_item_rows",
                shape=(len(item_ids) + 1, self.linear_rank),
                initializer="zeros",
                trainable=False,
            )
            if self.linear_rank
            else None
        )
        # The kernel branch's item table (training/kernel_branch.py), likewise, and the
        # item × value tables of the features whose per-user profiles its input reads.
        self.kernel_size = kernel_size
        self.kernel_profiles = (
            profile_tables(features, feature_table, config.kernel_item_features)
            if kernel_size
            else []
        )
        self.kernel_rows = (
            self.add_weight(
                name="kernel_item_rows",
                shape=(len(item_ids) + 1, kernel_size),
                initializer="zeros",
                trainable=False,
            )
            if kernel_size
            else None
        )
        # The content prior's per-feature weights (training/content_prior.py): zeros until
        # attach_blend fills them; only with item features and a prior weight.
        self.prior_weights: list[keras.Variable] = []
        self.prior_offset: keras.Variable | None = None
        if config.content_prior_weight > 0 and features:
            self.prior_weights = [
                self.add_weight(
                    name=f"prior_{f.name}", shape=(f.size,), initializer="zeros", trainable=False
                )
                for f in features
            ]
            self.prior_offset = self.add_weight(
                name="prior_offset", shape=(1,), initializer="zeros", trainable=False
            )
        self.blend_on = False

    @property
    def has_prior(self) -> bool:
        return self.prior_offset is not None

    @property
    def branch_tables(self) -> list[keras.Variable]:
        """The closed-form branches' item tables, in served order (linear, kernel)."""
        return [t for t in (self.linear_rows, self.kernel_rows) if t is not None]

    def build(self, input_shape: Any = None) -> None:
        """Sub-layers build on their first call (shapes are known only then)."""
        self.built = True

    def prior_of_blocks(self, blocks: Sequence[tf.Tensor]) -> tf.Tensor:
        """The content prior [B, 1] of items given by their feature index blocks (one
        [B, width] int block per feature, in feature order)."""
        assert self.prior_offset is not None
        total = tf.zeros([tf.shape(blocks[0])[0], 1]) + self.prior_offset
        for weights, block in zip(self.prior_weights, blocks, strict=True):
            values = tf.gather(weights, tf.cast(block, tf.int64))[..., tf.newaxis]
            total += _masked_mean(values, block)
        return total

    def call(self, items: tf.Tensor, training: bool = False) -> tf.Tensor:
        ids = tf.gather(self.id_rows, tf.cast(items, tf.int64))
        if training and self.config.item_id_dropout > 0:
            keep = tf.random.uniform(tf.shape(ids)) >= self.config.item_id_dropout
            ids = tf.where(keep, ids, tf.zeros_like(ids))
        parts = [self.id_embedding(ids)]
        if self.features is not None:
            parts.extend(self.features(items))
        inputs = tf.concat(parts, axis=-1)
        vectors = self.head(inputs)
        if self.bias is not None:
            # The bias rides in one extra dimension that meets the user vector's constant
            # 1: u·v / T + b = [u, 1]·[v, T·b] / T, so an inner-product index serves it.
            vectors = tf.concat([vectors, self.config.temperature * self.bias(inputs)], -1)
        if not self.blend_on:
            return vectors
        rows = tf.cast(items, tf.int64)
        parts = [tf.gather(t, rows) for t in self.branch_tables] + [vectors]
        if self.has_prior:
            # Only items without interactions (they read the unknown id row) carry the
            # prior: for the others the towers know better, and a popularity prior on
            # them costs a third of P2's Recall@10 (docs/quality.md).
            assert self.features is not None
            prior = self.prior_of_blocks([tf.gather(t, rows) for t in self.features.tables])
            cold = tf.cast(tf.equal(tf.gather(self.id_rows, rows), 0), prior.dtype)
            parts.append(prior * cold[:, tf.newaxis])
        return tf.concat(parts, axis=-1)

    def embed_ids(self, ids: tf.Tensor) -> tf.Tensor:
        return self(self.lookup(ids))


class UserTower(keras.Model):
    """Inputs (a dict): ``user`` [B] user vocabulary indices, ``history`` [B, H] item
    vocabulary indices, most recent first, 0-padded → [B, dim] unit vectors."""

    def __init__(
        self,
        user_ids: Sequence[str],
        item_tower: ItemTower,
        features: Sequence[FittedFeature],
        feature_table: Mapping[str, np.ndarray],
        config: TrainConfig,
    ) -> None:
        super().__init__(name="user_tower")
        self.config = config
        self.lookup = _lookup(user_ids, "user_lookup")
        self.item_lookup = item_tower.lookup
        self.item_embedding = item_tower.id_embedding  # shared with the item tower
        self.item_id_rows = item_tower.id_rows  # untrained items read the unknown row
        self.id_embedding = (
            _embedding(len(user_ids) + 1, config.id_embedding_dim, "user_id")
            if config.use_user_id
            else None
        )
        padded = {k: np.concatenate([np.zeros_like(v[:1]), v]) for k, v in feature_table.items()}
        self.features = (
            FeatureEmbeddings(features, padded, config.feature_embedding_dim, "user_features")
            if features
            else None
        )
        # Learnt recency weighting: position p (0 = most recent) gets weight exp(logit[p]),
        # starting as a geometric decay.
        self.position_logits = (
            self.add_weight(
                name="history_position_logits",
                shape=(config.history_length,),
                initializer=keras.initializers.Constant(
                    np.log(config.history_decay) * np.arange(config.history_length)
                ),
            )
            if config.use_history
            else None
        )
        self.head = _head(config.hidden_units, config.embedding_dim, "user_head")
        # The linear branch's user table and the parts' item covariances (z-scoring): zeros
        # until attach_blend fills them after training.
        rank, tt_dim = item_tower.linear_rank, config.embedding_dim + int(config.item_bias)
        self.linear_rows: keras.Variable | None = None
        self.linear_cov: keras.Variable | None = None
        self.learnt_cov: keras.Variable | None = None
        n_rows = int(item_tower.id_rows.shape[0])  # items + the unknown row 0
        if rank and item_tower.linear_rows is not None:
            self.linear_rows = self._constant("linear_user_rows", (n_rows, rank))
            self.linear_cov = self._constant("linear_cov", (rank, rank))
        # The kernel branch (training/kernel_branch.py): its anchors as an item-major 0/1
        # table (the item tower's own kernel table, shared as the id embedding is), their
        # squared norms, the map from a kernel row to the served part (zero rows and
        # columns for padding anchors), and the covariance.
        size = item_tower.kernel_size
        self.kernel_anchors: keras.Variable | None = None
        self.kernel_anchor_sq: keras.Variable | None = None
        self.kernel_map: keras.Variable | None = None
        self.kernel_cov: keras.Variable | None = None
        self.kernel_anchor_profiles: keras.Variable | None = None
        # Feature profiles: one [n_rows, size] 0/1 table per feature (row 0: padding).
        self.kernel_profiles = [
            tf.constant(np.concatenate([np.zeros_like(t[:1]), t]))
            for t in item_tower.kernel_profiles
        ]
        if size:
            self.kernel_anchors = item_tower.kernel_rows
            # float64: near θ = 0 the arc-cosine turns float32 rounding into 1e-4 errors
            self.kernel_anchor_sq = self._constant("kernel_anchor_sq", (size,), "float64")
            width = sum(t.shape[1] for t in item_tower.kernel_profiles)
            self.kernel_anchor_profiles = self._constant(
                "kernel_anchor_profiles", (width, size), "float64"
            )
            self.kernel_map = self._constant("kernel_map", (size, size), "float64")
            self.kernel_cov = self._constant("kernel_cov", (size, size))
        self.has_prior = item_tower.has_prior
        if self.linear_rows is not None or self.kernel_anchors is not None or self.has_prior:
            self.learnt_cov = self._constant("learnt_cov", (tt_dim, tt_dim))
        self.blend_on = False

    def _constant(
        self, name: str, shape: tuple[int, ...], dtype: str = "float32"
    ) -> keras.Variable:
        return self.add_weight(
            name=name, shape=shape, initializer="zeros", trainable=False, dtype=dtype
        )

    def build(self, input_shape: Any = None) -> None:
        """Sub-layers build on their first call (shapes are known only then)."""
        self.built = True

    def call(self, inputs: Mapping[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        vectors = self._learnt(inputs, training)
        if not self.blend_on:
            return vectors
        return self._blended(vectors, inputs["history"])

    def _blended(self, learnt: tf.Tensor, history: tf.Tensor) -> tf.Tensor:
        """[lin/σ_lin, ker/σ_ker, w·learnt/σ_learnt, w·w_prior], unit norm: every part
        z-scored per user over the catalogue, as one inner product (module docstring)."""
        assert self.learnt_cov is not None

        def scaled(v: tf.Tensor, cov: tf.Tensor) -> tf.Tensor:
            sigma = tf.sqrt(tf.reduce_sum(tf.matmul(v, cov) * v, axis=-1, keepdims=True))
            return tf.math.divide_no_nan(v, sigma)

        parts = []
        weight = 1.0
        if self.linear_rows is not None:
            assert self.linear_cov is not None
            rows = tf.gather(self.linear_rows, tf.cast(history, tf.int64))  # [B, H, r]
            parts.append(scaled(tf.reduce_sum(rows, axis=1), self.linear_cov))
            weight = self.config.linear_weight
        if self.kernel_anchors is not None:
            assert self.kernel_cov is not None and self.kernel_map is not None
            dual = tf.matmul(self._kernel_row(history), self.kernel_map)
            parts.append(scaled(tf.cast(dual, tf.float32), self.kernel_cov))
            weight = self.config.linear_weight
        parts.append(weight * scaled(learnt, self.learnt_cov))
        if self.has_prior:
            prior = weight * self.config.content_prior_weight
            parts.append(tf.fill([tf.shape(learnt)[0], 1], tf.cast(prior, learnt.dtype)))
        return tf.math.l2_normalize(tf.concat(parts, axis=-1), axis=-1)

    def _kernel_row(self, history: tf.Tensor) -> tf.Tensor:
        """[B, H] item indices → [B, m] float64 NTK of each user's 0/1 row against the
        anchors (``training.kernel_branch.ntk_from_products``)."""
        assert self.kernel_anchors is not None and self.kernel_anchor_sq is not None
        n_rows = int(self.kernel_anchors.shape[0])
        # The user's 0/1 row: each item once however often it repeats; row 0 is padding.
        seen = tf.math.bincount(
            tf.cast(history, tf.int64),
            minlength=n_rows,
            maxlength=n_rows,
            binary_output=True,
            axis=-1,
            dtype=tf.float32,
        )
        seen = tf.concat([tf.zeros_like(seen[:, :1]), seen[:, 1:]], axis=-1)
        dot = tf.cast(tf.matmul(seen, self.kernel_anchors), tf.float64)  # exact counts
        own_sq = tf.cast(tf.reduce_sum(seen, axis=-1, keepdims=True), tf.float64)
        d = float(n_rows - 1)
        if self.kernel_profiles:
            # As training.kernel_branch.user_profiles: per feature, the share of the
            # user's items with each value, scaled.
            assert self.kernel_anchor_profiles is not None
            seen64 = tf.cast(seen, tf.float64)
            blocks = []
            for table in self.kernel_profiles:
                counts = tf.matmul(seen64, tf.cast(table, tf.float64))
                totals = tf.reduce_sum(counts, axis=-1, keepdims=True)
                blocks.append(counts / tf.where(totals > 0, totals, tf.ones_like(totals)))
                d += float(table.shape[1])
            profile = self.config.kernel_feature_scale * tf.concat(blocks, axis=-1)
            dot += tf.matmul(profile, self.kernel_anchor_profiles)
            own_sq += tf.reduce_sum(profile * profile, axis=-1, keepdims=True)
        anchor_sq = self.kernel_anchor_sq[tf.newaxis, :]
        sw, sb = WEIGHT_VARIANCE, BIAS_VARIANCE
        sigma = sw * dot / d + sb
        s_own, s_anchor = sw * own_sq / d + sb, sw * anchor_sq / d + sb
        theta = sigma
        for _ in range(self.config.kernel_depth):
            norm = tf.sqrt(s_own * s_anchor)
            cos = tf.clip_by_value(sigma / norm, -1.0, 1.0)
            angle = tf.acos(cos)
            derivative = sw * (np.pi - angle) / (2 * np.pi)
            sigma = sw * norm * (tf.sin(angle) + (np.pi - angle) * cos) / (2 * np.pi) + sb
            s_own, s_anchor = sw * s_own / 2 + sb, sw * s_anchor / 2 + sb
            theta = sigma + theta * derivative
        return theta

    def _learnt(self, inputs: Mapping[str, tf.Tensor], training: bool) -> tf.Tensor:
        users = inputs["user"]
        parts = []
        if self.position_logits is not None:
            # The linear branch may read a longer history than the learnt pooling.
            history = inputs["history"][:, : self.config.history_length]
            mask = tf.cast(tf.not_equal(history, 0), tf.float32)
            if training and self.config.history_dropout > 0:
                kept = tf.random.uniform(tf.shape(history)) >= self.config.history_dropout
                mask = mask * tf.cast(kept, tf.float32)
            weights = tf.exp(self.position_logits)[tf.newaxis, : tf.shape(history)[1]] * mask
            embedded = self.item_embedding(tf.gather(self.item_id_rows, tf.cast(history, tf.int64)))
            pooled = tf.reduce_sum(embedded * weights[..., tf.newaxis], 1)
            parts.append(pooled / tf.maximum(tf.reduce_sum(weights, 1, keepdims=True), 1e-6))
        if self.id_embedding is not None:
            ids = users
            if training and self.config.user_id_dropout > 0:
                keep = tf.random.uniform(tf.shape(users)) >= self.config.user_id_dropout
                ids = tf.where(keep, users, tf.zeros_like(users))
            parts.append(self.id_embedding(ids))
        if self.features is not None:
            parts.extend(self.features(users))
        vectors = self.head(tf.concat(parts, axis=-1))
        if not self.config.item_bias:
            return vectors
        return tf.concat([vectors, tf.ones_like(vectors[:, :1])], axis=-1)

    def embed_ids(self, user_ids: tf.Tensor, history_ids: tf.Tensor) -> tf.Tensor:
        """[B] string user ids, [B, H] string item ids (most recent first, "" padded;
        columns past ``history_length`` are ignored)."""
        history = self.item_lookup(history_ids[:, : self.config.input_history_length])
        return self(
            {"user": self.lookup(user_ids), "history": history},
            training=False,
        )


class TwoTowerModel(keras.Model):
    """Keras model whose ``fit`` trains both towers with the retrieval loss.

    Batches are dicts: ``user`` [B], ``history`` [B, H], ``item`` [B] (the positive's
    vocabulary index).
    """

    def __init__(
        self,
        user_tower: UserTower,
        item_tower: ItemTower,
        item_log_q: np.ndarray,
        config: TrainConfig,
    ) -> None:
        """``item_log_q``: [n_items] log share of training interactions per item, in
        vocabulary order (index 1..n_items)."""
        super().__init__(name="two_tower")
        self.user_tower = user_tower
        self.item_tower = item_tower
        self.n_items = len(item_log_q)
        self.log_q_table = tf.constant(np.concatenate([[0.0], item_log_q]), dtype=tf.float32)
        self.config = config
        self.loss_tracker = keras.metrics.Mean(name="loss")

    def build(self, input_shape: Any = None) -> None:
        """Sub-layers build on their first call (shapes are known only then)."""
        self.built = True

    def call(self, batch: Mapping[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        return self.user_tower(batch, training=training)

    def compute_loss(
        self,
        x: Any = None,
        y: Any = None,
        y_pred: Any = None,
        sample_weight: Any = None,
        training: bool = True,
    ) -> tf.Tensor:
        loss = retrieval_loss(
            user_vectors=y_pred,
            positives=x["item"],
            item_tower=self.item_tower,
            log_q_table=self.log_q_table,
            n_items=self.n_items,
            config=self.config,
        )
        self.loss_tracker.update_state(loss)
        return loss

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [self.loss_tracker]


def attach_blend(
    user: UserTower,
    item: ItemTower,
    branch: LinearBranch | None = None,
    prior: ContentPrior | None = None,
    kernel: KernelBranch | None = None,
) -> None:
    """Fill the towers' closed-form parts and switch the blend on: from now on the towers
    return the served vectors (module docstring). Call after training; the learnt item
    covariance is taken from the item tower as it is now.

    A part the towers were built with but not given here (``None``) stays all zeros: its
    dimensions are served, and score nothing.
    """
    if branch is not None and (user.linear_rows is None or item.linear_rows is None):
        raise ValueError("the towers were built without a linear branch (linear_rank 0)")
    if prior is not None and not item.has_prior:
        raise ValueError("the towers were built without a content prior")
    if kernel is not None and (item.kernel_rows is None or kernel.size != item.kernel_size):
        raise ValueError(
            f"the towers were built for a kernel branch of {item.kernel_size} columns, "
            f"not {kernel.size}"
        )
    if user.learnt_cov is None:
        raise ValueError("the towers were built without any part to blend")
    item.blend_on = user.blend_on = False
    n_items = int(np.asarray(item.id_rows).shape[0]) - 1
    learnt = np.asarray(item(tf.range(1, n_items + 1, dtype=tf.int64)), dtype=np.float64)
    trained = np.asarray(item.id_rows)[1:] > 0
    if branch is not None:
        assert item.linear_rows is not None and user.linear_rows is not None
        assert user.linear_cov is not None
        item.linear_rows.assign(branch.item_rows)
        user.linear_rows.assign(branch.user_rows)
        user.linear_cov.assign(branch.item_cov.astype(np.float32))
    if kernel is not None:
        assert item.kernel_rows is not None and user.kernel_anchors is not None
        assert user.kernel_anchor_sq is not None and user.kernel_map is not None
        assert user.kernel_cov is not None
        item.kernel_rows.assign(kernel.item_rows)  # also the user tower's anchors
        user.kernel_anchor_sq.assign(kernel.anchor_sq)
        user.kernel_map.assign(kernel.user_map)
        assert user.kernel_anchor_profiles is not None
        user.kernel_anchor_profiles.assign(kernel.anchor_profiles)
        user.kernel_cov.assign(kernel.item_cov.astype(np.float32))
    if prior is not None:
        assert item.prior_offset is not None
        for variable, weights in zip(item.prior_weights, prior.weights, strict=True):
            variable.assign(weights)
        item.prior_offset.assign(np.array([prior.offset], dtype=np.float32))
    user.learnt_cov.assign(
        item_covariance(learnt[trained] if trained.any() else learnt).astype(np.float32)
    )
    item.blend_on = user.blend_on = True
