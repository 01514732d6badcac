"""training: the in-batch softmax loss, the leave-last-out split and recall@k.

The towers, features and the end-to-end run with its export are in test_towers.py."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from training.evaluation import leave_last_out, popularity_recall_at_k, recall_at_k
from training.retrieval_task import in_batch_softmax_loss

# --- in-batch softmax loss ---------------------------------------------------------------

U = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], dtype=np.float32)
V = np.array([[0.8, 0.6], [0.0, 1.0], [1.0, 0.0]], dtype=np.float32)


def loss_of(users, items, ids, temperature, log_q=None) -> float:  # type: ignore[no-untyped-def]
    return float(
        in_batch_softmax_loss(
            tf.constant(users),
            tf.constant(items),
            tf.constant(ids),
            temperature,
            None if log_q is None else tf.constant(log_q, dtype=tf.float32),
        )
    )


def reference_loss(logits: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean over rows of -log softmax(row)[diagonal], using only unmasked columns."""
    losses = []
    for b, row in enumerate(logits.astype(np.float64)):
        keep = np.ones(len(row), bool) if mask is None else ~mask[b]
        losses.append(-(row[b] - math.log(np.exp(row[keep]).sum())))
    return float(np.mean(losses))


def test_zero_vectors_give_log_batch_size() -> None:
    zeros = np.zeros((3, 2), np.float32)
    assert loss_of(zeros, zeros, ["a", "b", "c"], 0.1) == pytest.approx(math.log(3), rel=1e-6)


def test_zero_vectors_with_logq_closed_form() -> None:
    # logits row = -log q = [ln 2, ln 4, ln 4] → exp: [2, 4, 4], sum 10.
    zeros = np.zeros((3, 2), np.float32)
    log_q = np.log([0.5, 0.25, 0.25])
    expected = (math.log(10 / 2) + 2 * math.log(10 / 4)) / 3
    assert loss_of(zeros, zeros, ["a", "b", "c"], 0.1, log_q) == pytest.approx(expected, rel=1e-6)


def test_loss_matches_hand_computation_without_logq() -> None:
    temperature = 0.5
    # U @ V.T = [[0.8, 0, 1], [0.6, 1, 0], [0.96, 0.8, 0.6]]
    logits = np.array([[0.8, 0.0, 1.0], [0.6, 1.0, 0.0], [0.96, 0.8, 0.6]]) / temperature
    np.testing.assert_allclose(U @ V.T * 2, logits, atol=1e-6)
    expected = reference_loss(logits)
    assert loss_of(U, V, ["a", "b", "c"], temperature) == pytest.approx(expected, rel=1e-5)
    # By hand: row losses 0.9909, 0.4604, 1.5143 (logsumexp of the row minus its diagonal).
    assert expected == pytest.approx(0.988534, abs=1e-5)


def test_loss_matches_hand_computation_with_logq() -> None:
    temperature = 0.5
    log_q = np.log(np.array([0.5, 0.3, 0.2]))
    logits = U @ V.T / temperature - log_q[None, :]
    expected = reference_loss(logits)
    got = loss_of(U, V, ["a", "b", "c"], temperature, log_q)
    assert got == pytest.approx(expected, rel=1e-5)
    assert got != pytest.approx(loss_of(U, V, ["a", "b", "c"], temperature), rel=1e-3)


def test_duplicate_items_in_batch_are_not_negatives() -> None:
    temperature = 0.5
    ids = ["a", "b", "a"]  # rows 0 and 2 share an item: mask (0, 2) and (2, 0)
    logits = U @ V.T / temperature
    mask = np.zeros((3, 3), bool)
    mask[0, 2] = mask[2, 0] = True
    expected = reference_loss(logits, mask)
    got = loss_of(U, V, ids, temperature)
    assert got == pytest.approx(expected, rel=1e-5)
    assert got != pytest.approx(reference_loss(logits), rel=1e-3)  # the mask really changed it


def test_duplicate_masking_with_integer_vocabulary_indices() -> None:
    """Training passes int64 vocabulary indices as item ids; masking must work the same."""
    temperature = 0.5
    as_strings = loss_of(U, V, ["a", "b", "a"], temperature)
    as_indices = loss_of(U, V, np.array([3, 7, 3], dtype=np.int64), temperature)
    assert as_indices == pytest.approx(as_strings, rel=1e-6)
    assert as_indices != pytest.approx(loss_of(U, V, ["a", "b", "c"], temperature), rel=1e-3)


def test_duplicate_masking_with_logq() -> None:
    temperature = 0.25
    ids = ["x", "x", "y"]
    log_q = np.log(np.array([0.4, 0.4, 0.2]))
    logits = U @ V.T / temperature - log_q[None, :]
    mask = np.zeros((3, 3), bool)
    mask[0, 1] = mask[1, 0] = True
    got = loss_of(U, V, ids, temperature, log_q)
    assert got == pytest.approx(reference_loss(logits, mask), rel=1e-5)


def test_loss_is_finite_and_differentiable_with_all_items_equal() -> None:
    users = tf.Variable(U)
    with tf.GradientTape() as tape:
        loss = in_batch_softmax_loss(users, tf.constant(V), tf.constant(["a", "a", "a"]), 0.1)
    # Every off-diagonal column is masked, so each row's softmax is certain: loss 0.
    assert float(loss) == pytest.approx(0.0, abs=1e-6)
    grad = tape.gradient(loss, users)
    assert np.isfinite(grad.numpy()).all()


# --- leave-last-out and recall@k ---------------------------------------------------------


def test_leave_last_out_holds_out_the_latest_interaction() -> None:
    frame = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u1", "u2", "u3", "u3", "u4", "u4"],
            "item_id": ["a", "b", "c", "a", "b", "a", "z", "a"],
            "timestamp": [30, 10, 20, 5, 2, 1, 1, 9],
        }
    )
    split = leave_last_out(frame)

    test = split.test.set_index("user_id")["item_id"].to_dict()
    # u1: latest is a@30; u3: latest is b@2; u2 has one interaction (stays in train);
    # u4's latest is a@9 (in train from others), z@1 stays in train.
    assert test == {"u1": "a", "u3": "b", "u4": "a"}
    train_pairs = set(zip(split.train["user_id"], split.train["item_id"], strict=True))
    assert train_pairs == {("u1", "b"), ("u1", "c"), ("u2", "a"), ("u3", "a"), ("u4", "z")}
    assert list(split.train.index) == list(range(len(split.train)))


def test_leave_last_out_drops_test_items_never_seen_in_train() -> None:
    frame = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u2", "u2"],
            "item_id": ["a", "new", "a", "b"],
            "timestamp": [1, 2, 1, 2],
        }
    )
    split = leave_last_out(frame)
    assert split.test["user_id"].tolist() == []  # "new" and "b" appear only as held-out items
    assert len(split.train) == 2


def test_recall_at_k_hand_made() -> None:
    items = np.array([[1, 0], [0.9, 0.1], [0, 1], [-1, 0]], dtype=np.float32)
    users = np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32)
    # user 0: ranking 0,1,2,3; target 1 → rank 2.
    # user 1: item 0 seen (excluded) → ranking 1,2,3; target 2 → rank 2.
    # user 2: ranking 2,1,0,3; target 3 → rank 4.
    targets = np.array([1, 2, 3])
    seen = [np.array([], dtype=np.int64), np.array([0]), np.array([], dtype=np.int64)]
    got = recall_at_k(users, items, targets, seen, [1, 2, 4])
    assert got == {"recall@1": 0.0, "recall@2": pytest.approx(2 / 3), "recall@4": 1.0}
    # Chunking does not change the answer.
    assert recall_at_k(users, items, targets, seen, [1, 2, 4], chunk=1) == got


def test_recall_at_k_counts_excluded_seen_item() -> None:
    items = np.array([[1, 0], [0, 1]], dtype=np.float32)
    users = np.array([[1, 0]], dtype=np.float32)
    assert recall_at_k(users, items, np.array([1]), [np.array([0])], [1]) == {"recall@1": 1.0}
    assert recall_at_k(users, items, np.array([1]), [np.array([], np.int64)], [1]) == {
        "recall@1": 0.0
    }


def test_popularity_recall_at_k() -> None:
    train = pd.DataFrame({"user_id": ["u1", "u2", "u2", "u3"], "item_id": ["a", "a", "b", "c"]})
    test = pd.DataFrame({"user_id": ["u1", "u2"], "item_id": ["b", "c"]})
    # ranked a, b, c; u1 unseen → [b, c]; u2 unseen → [c].
    assert popularity_recall_at_k(train, test, [1]) == {"popularity_recall@1": 1.0}
