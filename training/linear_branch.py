"""The towers' closed-form linear branch: a low-rank EASE item–item model as two tables.

EASE (Steck, WWW 2019) scores ``s(u) = x_u · B`` with ``B = I − P·diag(1/diag P)``,
``P = (XᵀX + λI)⁻¹`` and ``x_u`` the user's 0/1 history row. ``B`` is [n_items, n_items];
an inner-product index needs it low rank. The best rank-r ``B_r`` for the training scores
``X·B`` (Frobenius) keeps the top-r right singular vectors ``Q`` of ``X·B``:
``B_r = B·Q·Qᵀ``. So a user's linear vector is ``Σ_{i ∈ history} (B·Q)[i]`` (a sum pooling
over one table) and an item's is ``Q[j]``: a two-tower in its own right, fitted in closed
form. ``Q`` comes from the eigenvectors of ``(X·B)ᵀ(X·B) = Bᵀ·G·B``, whose size does not
grow with the number of users.

The branch is *added* to the learnt towers' scores, each part z-scored per user over the
catalogue: ``s = s_lin / σ_lin(u) + w · s_tt / σ_tt(u)`` (a per-user shift does not change
a ranking). ``σ(u)² = uᵀ·Σ·u`` with ``Σ`` the item vectors' covariance, so both scales are
functions of the user vector alone and the sum is one inner product of concatenated
vectors: ``[lin/σ_lin, w·tt/σ_tt] · [Q[j], v_j]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class LinearBranch:
    """Fitted tables, in item vocabulary order with row 0 for unknown/padding (all zero).

    ``user_rows``: [n_items + 1, rank] float32, summed over a user's history items.
    ``item_rows``: [n_items + 1, rank] float32, an item's linear vector.
    ``item_cov``: [rank, rank] float64 covariance of the known items' linear vectors.
    """

    user_rows: np.ndarray
    item_rows: np.ndarray
    item_cov: np.ndarray

    @property
    def rank(self) -> int:
        return int(self.item_rows.shape[1])


def interaction_matrix(
    interactions: pd.DataFrame, item_ids: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """([n_pairs] user codes, [n_pairs] item vocabulary rows 0-based) of the distinct
    (user, item) pairs whose item is in ``item_ids``."""
    index = {item: i for i, item in enumerate(item_ids)}
    pairs = interactions[["user_id", "item_id"]].drop_duplicates()
    rows = pairs["item_id"].map(index)
    known = rows.notna().to_numpy()
    users = pd.factorize(pairs["user_id"])[0][known]
    return users.astype(np.int64), rows.to_numpy()[known].astype(np.int64)


def ease_gram(users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    """[n_items, n_items] float64 ``XᵀX`` of the 0/1 matrix given as (user, item) pairs."""
    n_users = int(users.max()) + 1 if users.size else 0
    x = np.zeros((n_users, n_items), dtype=np.float32)
    x[users, items] = 1.0
    return (x.T @ x).astype(np.float64)


def ease_weights(gram: np.ndarray, l2: float) -> np.ndarray:
    """EASE's B (diag 0) from ``XᵀX``; ``l2`` > 0 is EASE's λ."""
    if l2 <= 0:
        raise ValueError("the linear branch needs l2 > 0")
    g = gram.copy()
    g[np.diag_indices_from(g)] += l2
    p = np.linalg.inv(g)
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b


def fit_linear_branch(
    interactions: pd.DataFrame, item_ids: Sequence[str], rank: int, l2: float
) -> LinearBranch:
    """Fit the rank-``rank`` EASE branch on ``interactions`` for the vocabulary ``item_ids``.

    Cost: O(n_items³) time and O(n_items²) memory, so the config caps the catalogue size.
    """
    n_items = len(item_ids)
    rank = min(rank, n_items)
    users, items = interaction_matrix(interactions, item_ids)
    gram = ease_gram(users, items, n_items)
    b = ease_weights(gram, l2)
    # Top right singular vectors of X·B = top eigenvectors of Bᵀ·G·B (symmetric PSD).
    values, vectors = np.linalg.eigh(b.T @ gram @ b)
    q = vectors[:, np.argsort(values)[::-1][:rank]]
    user_rows = b @ q
    known = np.diag(gram) > 0
    centred = q[known] - q[known].mean(axis=0) if known.any() else q[:0]
    cov = centred.T @ centred / max(int(known.sum()), 1)
    pad = np.zeros((1, rank))
    return LinearBranch(
        user_rows=np.concatenate([pad, user_rows]).astype(np.float32),
        item_rows=np.concatenate([pad, np.where(known[:, None], q, 0.0)]).astype(np.float32),
        item_cov=cov,
    )


def item_covariance(item_vectors: np.ndarray) -> np.ndarray:
    """[dim, dim] float64 covariance of ``item_vectors`` [n, dim] (rows = items)."""
    v = np.asarray(item_vectors, dtype=np.float64)
    centred = v - v.mean(axis=0)
    return centred.T @ centred / max(len(v), 1)
