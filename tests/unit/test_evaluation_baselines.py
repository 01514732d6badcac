"""evaluation.baselines: EASE against a 3×3 case solved by hand; ItemKNN and Pop on tiny data."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.baselines import (
    ItemItemScorer,
    PopScorer,
    ease_weights,
    itemknn_weights,
    popularity,
)

# Users × items. XᵀX = [[2, 1, 0], [1, 2, 1], [0, 1, 1]].
X = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 1]], dtype=np.float32)


def test_ease_three_items_by_hand() -> None:
    # λ = 1: G = XᵀX + I = [[3, 1, 0], [1, 3, 1], [0, 1, 2]], det G = 3·5 − 1·2 = 13.
    # P = G⁻¹ = adj(G)/13 = [[5, −2, 1], [−2, 6, −3], [1, −3, 8]] / 13.
    # B_ij = −P_ij / P_jj (i ≠ j), B_jj = 0:
    expected = np.array(
        [
            [0.0, 2 / 6, -1 / 8],
            [2 / 5, 0.0, 3 / 8],
            [-1 / 5, 3 / 6, 0.0],
        ]
    )
    b = ease_weights(X, 1.0)
    np.testing.assert_allclose(b, expected, atol=1e-12)
    # The closed form is the formula's B = I − P·diag(1/diag(P)).
    p = np.linalg.inv(X.T.astype(np.float64) @ X + np.eye(3))
    np.testing.assert_allclose(b, np.eye(3) - p @ np.diag(1 / np.diag(p)), atol=1e-12)
    # User 1 (item 0 only) scores item 1 above item 2: B[0] = [0, 1/3, −1/8].
    scores = ItemItemScorer(X, b)(np.array([1]))
    np.testing.assert_allclose(scores[0], [0.0, 1 / 3, -1 / 8], atol=1e-6)


def test_ease_rejects_non_positive_lambda() -> None:
    with pytest.raises(ValueError):
        ease_weights(X, 0.0)


def test_itemknn_cosine_by_hand() -> None:
    # Norms: √2, √2, 1. cos(0,1) = 1/2, cos(0,2) = 0, cos(1,2) = 1/√2; the diagonal is 0.
    w = itemknn_weights(X, k=3)
    expected = np.array([[0.0, 0.5, 0.0], [0.5, 0.0, 1 / np.sqrt(2)], [0.0, 1 / np.sqrt(2), 0.0]])
    np.testing.assert_allclose(w, expected, atol=1e-5)  # RecBole's +1e-6 in the denominator


def test_itemknn_keeps_k_neighbours_per_column() -> None:
    # k = 1: column 1 (item 1) keeps only its best neighbour, item 2 (0.707 > 0.5).
    w = itemknn_weights(X, k=1)
    assert w[:, 1] == pytest.approx([0.0, 0.0, 1 / np.sqrt(2)], abs=1e-5)
    assert w[:, 0] == pytest.approx([0.0, 0.5, 0.0], abs=1e-5)
    # score(u, j) = Σ_i X[u, i] W[i, j]: user 0 holds items 0 and 1.
    scores = ItemItemScorer(X, w)(np.array([0]))[0]
    assert scores == pytest.approx([0.5, 0.0, 1 / np.sqrt(2)], abs=1e-5)


def test_itemknn_shrink_lowers_similarities() -> None:
    assert itemknn_weights(X, k=3, shrink=10.0)[0, 1] == pytest.approx(1 / 12, abs=1e-5)


def test_popularity_is_the_same_for_every_user() -> None:
    counts = popularity(X)
    assert counts.tolist() == [2.0, 2.0, 1.0]
    scores = PopScorer(counts)(np.array([0, 2]))
    assert scores.shape == (2, 3) and (scores == counts).all()
