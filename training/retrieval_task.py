"""In-batch softmax retrieval loss (the "task" owns the loss, as in TFRS)."""

from __future__ import annotations

import tensorflow as tf


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
    logits = tf.matmul(user_vectors, item_vectors, transpose_b=True) / temperature
    if item_log_q is not None:
        logits = logits - item_log_q[tf.newaxis, :]
    same_item = tf.equal(item_ids[:, tf.newaxis], item_ids[tf.newaxis, :])
    is_diag = tf.eye(tf.shape(logits)[0], dtype=tf.bool)
    logits = tf.where(tf.logical_and(same_item, tf.logical_not(is_diag)), logits.dtype.min, logits)
    labels = tf.range(tf.shape(logits)[0])
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    return tf.reduce_mean(losses)
