"""Non-neural baselines in numpy, fitted on a dense 0/1 matrix X: [n_users, n_items].

- **Pop**: every user gets the items with most training interactions.
- **ItemKNN** (RecBole's ``ComputeSimilarity``, ``knn_method: item``): cosine similarity
  ``s(i, j) = x_i·x_j / (‖x_i‖‖x_j‖ + shrink + 1e-6)`` with ``s(j, j) = 0``; each item j
  keeps its ``k`` most similar items i; ``score(u, j) = Σ_i X[u, i]·W[i, j]``.
- **EASE** (Steck, WWW 2019): ``P = (XᵀX + λI)⁻¹``, ``B = I − P·diag(1/diag(P))`` (so
  ``diag(B) = 0``), ``score(u) = X[u]·B``.

Each scorer maps catalogue user rows to a [n, n_items] score matrix (see
:data:`evaluation.ranking.ScoreFn`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ITEMKNN_NEIGHBOURS = 100
"""RecBole's ItemKNN default ``k``."""
EASE_LAMBDAS = (100.0, 200.0, 250.0, 500.0)
"""λ grid searched on the tuning split; 250 is RecBole's default ``reg_weight``."""


def popularity(x: np.ndarray) -> np.ndarray:
    """[n_items] float32 interaction counts (column sums of ``x``)."""
    return np.asarray(x.sum(axis=0), dtype=np.float32)


def itemknn_weights(x: np.ndarray, k: int = ITEMKNN_NEIGHBOURS, shrink: float = 0.0) -> np.ndarray:
    """[n_items, n_items] float32 W; column j holds item j's ``k`` nearest items' cosines.

    Zero similarities are never kept (as RecBole drops them from its sparse matrix).
    """
    x = x.astype(np.float32, copy=False)
    n_items = x.shape[1]
    k = min(k, n_items)
    norms = np.sqrt((x * x).sum(axis=0))
    sim = x.T @ x
    sim /= np.outer(norms, norms) + shrink + 1e-6
    np.fill_diagonal(sim, 0.0)
    # Column j: keep the k largest entries (rows = neighbours), zero the rest.
    keep = np.argpartition(-sim, k - 1, axis=0)[:k, :]
    w = np.zeros_like(sim)
    cols = np.broadcast_to(np.arange(n_items), keep.shape)
    w[keep, cols] = sim[keep, cols]
    return w


def ease_weights(x: np.ndarray, lam: float) -> np.ndarray:
    """[n_items, n_items] float64 B of EASE with L2 weight ``lam`` (> 0); diag(B) = 0."""
    if lam <= 0:
        raise ValueError("EASE needs λ > 0")
    gram = x.astype(np.float64).T @ x.astype(np.float64)
    gram[np.diag_indices_from(gram)] += lam
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b


@dataclass(frozen=True)
class PopScorer:
    """Pop: the same popularity scores for every user."""

    counts: np.ndarray  # [n_items]

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.counts, (len(rows), len(self.counts))).astype(np.float32)


@dataclass(frozen=True)
class ItemItemScorer:
    """ItemKNN and EASE: ``scores = X[rows] @ W``."""

    x: np.ndarray  # [n_users, n_items] training matrix
    weights: np.ndarray  # [n_items, n_items]

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.x[rows] @ self.weights, dtype=np.float32)
