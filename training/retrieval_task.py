"""Retrieval losses (the "task" owns the loss, as in TFRS).

- ``in_batch_softmax_loss``: each user against the batch's positives, with logQ correction
  and accidental-hit masking.
- ``retrieval_loss``: what ``TwoTowerModel.compute_loss`` uses; picks by config between the
  full softmax over the whole catalogue (exact, for catalogues up to
  ``full_softmax_max_items``), in-batch negatives, or in-batch plus uniformly sampled
  negatives ("mixed negative sampling", logQ-corrected by the mixture's probability).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import tensorflow as tf

if TYPE_CHECKING:
    import keras

    from training.config import TrainConfig


def in_batch_softmax_loss(
    user_vectors: tf.Tensor,
    item_vectors: tf.Tensor,
    item_ids: tf.Tensor,
    temperature: float,
    item_log_q: tf.Tensor | None = None,
) -> tf.Tensor:
    """Mean cross-entropy of each user against every item in the batch.

    Args:
        user_vectors: [batch, dim] user embeddings (row b interacted with item b).
        item_vectors: [batch, dim] item embeddings.
        item_ids: [batch] ids of the items (strings or vocabulary indices); columns holding
            the same item as a row's positive are masked out for that row (not negatives).
        temperature: logits are ``u·i / temperature``.
        item_log_q: optional [batch] log sampling probability of each item, subtracted from
            its column (logQ correction: popular items are not over-penalised as negatives).
    Returns:
        Scalar loss.
    """
    return sampled_softmax_loss(
        user_vectors, item_vectors, item_ids, item_ids, temperature, item_log_q
    )


def sampled_softmax_loss(
    user_vectors: tf.Tensor,
    candidate_vectors: tf.Tensor,
    candidate_ids: tf.Tensor,
    positive_ids: tf.Tensor,
    temperature: float,
    candidate_log_q: tf.Tensor | None = None,
) -> tf.Tensor:
    """Softmax of row b over candidates whose first ``batch`` columns are the positives.

    Args:
        user_vectors: [B, dim].
        candidate_vectors: [C, dim], C ≥ B; column b < B is row b's positive, the rest are
            negatives (other rows' positives and any sampled items).
        candidate_ids: [C] ids of the candidates; positive_ids: [B] (= candidate_ids[:B]).
            A column holding the same item as row b's positive (other than column b) is
            masked for row b: an accidental hit is not a negative.
        candidate_log_q: optional [C] log sampling probability, subtracted from each column.
    Returns:
        Scalar mean loss.
    """
    logits = tf.matmul(user_vectors, candidate_vectors, transpose_b=True) / temperature
    if candidate_log_q is not None:
        logits = logits - candidate_log_q[tf.newaxis, :]
    batch = tf.shape(logits)[0]
    same_item = tf.equal(positive_ids[:, tf.newaxis], candidate_ids[tf.newaxis, :])
    is_label = tf.equal(tf.range(batch)[:, tf.newaxis], tf.range(tf.shape(logits)[1])[tf.newaxis])
    logits = tf.where(tf.logical_and(same_item, tf.logical_not(is_label)), logits.dtype.min, logits)
    labels = tf.range(batch)
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    return tf.reduce_mean(losses)


def full_softmax_loss(
    user_vectors: tf.Tensor,
    all_item_vectors: tf.Tensor,
    positives: tf.Tensor,
    temperature: float,
    candidates: tf.Tensor | None = None,
) -> tf.Tensor:
    """Exact softmax over the catalogue.

    Args:
        user_vectors: [B, dim]; all_item_vectors: [N, dim] for vocabulary indices 1..N;
        positives: [B] vocabulary indices in 1..N.
        candidates: optional [N] bool, the items that take part in the softmax (positives
            must be among them); the others are neither positives nor negatives.
    """
    logits = tf.matmul(user_vectors, all_item_vectors, transpose_b=True) / temperature
    if candidates is not None:
        logits = tf.where(candidates[tf.newaxis, :], logits, logits.dtype.min)
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(positives, tf.int32) - 1, logits=logits
    )
    return tf.reduce_mean(losses)


def negative_mode(config: TrainConfig, n_items: int) -> str:
    """``full`` / ``in_batch`` / ``mixed`` after resolving ``auto`` by catalogue size."""
    if config.negatives != "auto":
        return config.negatives
    return "full" if n_items <= config.full_softmax_max_items else "mixed"


def retrieval_loss(
    user_vectors: tf.Tensor,
    positives: tf.Tensor,
    item_tower: keras.Model,
    log_q_table: tf.Tensor,
    n_items: int,
    config: TrainConfig,
) -> tf.Tensor:
    """The training loss for one batch.

    Args:
        user_vectors: [B, dim] from the user tower.
        positives: [B] item vocabulary indices (1..n_items).
        item_tower: maps [C] vocabulary indices to [C, dim].
        log_q_table: [n_items + 1] log of each item's share of training interactions.
    """
    mode = negative_mode(config, n_items)
    positives = tf.cast(positives, tf.int64)
    if mode == "full":
        everything = tf.range(1, n_items + 1, dtype=tf.int64)
        # An item with no training interactions (in the items table only) is unknown, not
        # a negative: pushing it down would teach its content tokens "never chosen", which
        # is exactly wrong for a new item.
        trained = tf.not_equal(tf.gather(item_tower.id_rows, everything), 0)
        return full_softmax_loss(
            user_vectors,
            item_tower(everything, training=True),
            positives,
            config.temperature,
            trained,
        )
    candidates = positives
    batch = tf.cast(tf.shape(positives)[0], tf.float32)
    sampled = 0
    if mode == "mixed" and config.uniform_negatives > 0:
        sampled = config.uniform_negatives
        uniform = tf.random.uniform([sampled], 1, n_items + 1, dtype=tf.int64)
        candidates = tf.concat([positives, uniform], axis=0)
    log_q = tf.gather(log_q_table, candidates)
    if sampled:
        # Probability of drawing the item into this batch's candidates under the mixture:
        # batch·p(item) from the positives plus sampled/n_items from the uniform draw.
        log_q = tf.math.log(batch * tf.exp(log_q) + sampled / n_items)
    return sampled_softmax_loss(
        user_vectors,
        item_tower(candidates, training=True),
        candidates,
        positives,
        config.temperature,
        log_q if config.logq_correction else None,
    )
