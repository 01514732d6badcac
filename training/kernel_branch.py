"""The towers' closed-form kernel branch: ∞-AE, kernel ridge regression over users.

∞-AE (Sachdeva et al., "Infinite Recommendation Networks", WSDM 2022) is an autoencoder
of infinite width: kernel ridge regression from a user's 0/1 history row ``x`` to the
same row, with the neural tangent kernel (NTK) of a fully connected ReLU network. Over
``m`` *anchor* users with rows ``X`` [m, n_items]:

    α = (K + reg · tr(K)/m · I)⁻¹ · X          [m, n_items], K = NTK(X, X)
    s(u) = NTK(x_u, X) · α                      [n_items]

That is an inner product of the user's kernel row ``k_u = NTK(x_u, X)`` [m] with an item's
column ``α[:, j]`` [m], so an inner-product index serves it exactly: a two-tower whose user
side is the kernel against the anchors and whose item side is a table. A fresh event
changes ``x_u`` and so ``k_u``: the user tower recomputes it from the history.

The NTK of a depth-``L`` ReLU network (NTK parameterisation, ``σ_w² = 2``,
``σ_b² = 0.01``; inputs of dimension ``d`` = the number of items) by the usual recursion,
with ``Σ`` the NNGP kernel and ``Θ`` the NTK:

    Σ⁰(x, y) = σ_w² x·y / d + σ_b²,  Θ⁰ = Σ⁰
    θ = arccos(Σˡ(x, y) / √(Σˡ(x, x) Σˡ(y, y)))
    Σˡ⁺¹ = σ_w² √(Σˡ(x, x) Σˡ(y, y)) (sin θ + (π − θ) cos θ) / 2π + σ_b²
    Θˡ⁺¹ = Σˡ⁺¹ + Θˡ · σ_w² (π − θ) / 2π

and Σˡ⁺¹(x, x) = σ_w² Σˡ(x, x) / 2 + σ_b² on the diagonal (θ = 0). ``ntk`` below is the
numpy form; ``training.model.UserTower`` computes the same in TensorFlow.

Cost: O(m² · n_items + m³) to fit and m floats per served vector, so ``m`` is capped
(``kernel_max_users``; a seeded sample of the training users above it). On ML-100K's P1
split it beats EASE by +2 % Recall@10 alone (docs/quality.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from training.linear_branch import interaction_matrix, item_covariance

WEIGHT_VARIANCE = 2.0
"""σ_w²: 2 keeps a ReLU layer's second moment (He initialisation), as ∞-AE does."""
BIAS_VARIANCE = 0.01
"""σ_b²: ∞-AE's ``b_std`` 0.1, squared."""


def ntk(
    a: np.ndarray,
    b: np.ndarray,
    depth: int,
    a_sq: np.ndarray | None = None,
    b_sq: np.ndarray | None = None,
) -> np.ndarray:
    """[len(a), len(b)] float64 NTK of a depth-``depth`` ReLU network between rows of
    ``a`` [p, d] and ``b`` [q, d]. ``a_sq``/``b_sq``: the rows' squared norms, if known."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    d = a.shape[1]
    a_sq = (a * a).sum(axis=1) if a_sq is None else np.asarray(a_sq, dtype=np.float64)
    b_sq = (b * b).sum(axis=1) if b_sq is None else np.asarray(b_sq, dtype=np.float64)
    return ntk_from_products(a @ b.T, a_sq, b_sq, d, depth)


def ntk_from_products(
    dot: np.ndarray, a_sq: np.ndarray, b_sq: np.ndarray, d: int, depth: int
) -> np.ndarray:
    """The NTK from the inner products ``dot`` [p, q] and the squared norms of both sides
    ([p], [q]) of inputs of dimension ``d``."""
    sw, sb = WEIGHT_VARIANCE, BIAS_VARIANCE
    sigma = sw * dot / d + sb
    sa = sw * a_sq / d + sb
    sb_ = sw * b_sq / d + sb
    theta = sigma.copy()
    for _ in range(depth):
        norm = np.sqrt(np.outer(sa, sb_))
        cos = np.clip(sigma / norm, -1.0, 1.0)
        angle = np.arccos(cos)
        derivative = sw * (np.pi - angle) / (2 * np.pi)
        sigma = sw * norm * (np.sin(angle) + (np.pi - angle) * cos) / (2 * np.pi) + sb
        sa = sw * sa / 2 + sb
        sb_ = sw * sb_ / 2 + sb
        theta = sigma + theta * derivative
    return theta


@dataclass(frozen=True)
class KernelBranch:
    """Fitted tables, in item vocabulary order with row 0 for unknown/padding (all zero);
    ``m`` columns, one per anchor user (trailing columns all zero when fewer users than
    the towers were built for: they score nothing).

    ``anchors``: [n_items + 1, m] float32 0/1, ``X``ᵀ: which anchors have each item.
    ``anchor_sq``: [m] float32, each anchor's number of items (‖x‖²).
    ``anchor_valid``: [m] float32, 1 for a real anchor, 0 for padding.
    ``item_rows``: [n_items + 1, m] float32, item j's ``α[:, j]``.
    ``item_cov``: [m, m] float64 covariance of the known items' rows (z-scoring).
    """

    anchors: np.ndarray
    anchor_sq: np.ndarray
    anchor_valid: np.ndarray
    item_rows: np.ndarray
    item_cov: np.ndarray

    @property
    def size(self) -> int:
        return int(self.item_rows.shape[1])


def anchor_count(max_users: int, n_users: int) -> int:
    """Columns of the kernel branch for a vocabulary of ``n_users`` users."""
    return min(max_users, n_users)


def fit_kernel_branch(
    interactions: pd.DataFrame,
    item_ids: Sequence[str],
    size: int,
    depth: int,
    reg: float,
    seed: int,
) -> KernelBranch:
    """Fit ∞-AE on ``interactions`` for the vocabulary ``item_ids`` with ``size`` columns.

    Anchors: every user of ``interactions``, or a ``seed``-ed sample of ``size`` of them
    when there are more. ``reg`` > 0 is the ridge, relative to K's mean diagonal.
    """
    if reg <= 0:
        raise ValueError("the kernel branch needs reg > 0")
    n_items = len(item_ids)
    users, items = interaction_matrix(interactions, item_ids)
    n_users = int(users.max()) + 1 if users.size else 0
    x = np.zeros((n_users, n_items), dtype=np.float64)
    x[users, items] = 1.0
    if n_users > size:
        keep = np.sort(np.random.default_rng(seed).choice(n_users, size=size, replace=False))
        x = x[keep]
    m = len(x)
    k = ntk(x, x, depth)
    ridge = reg * np.trace(k) / max(m, 1)
    alpha = np.linalg.solve(k + ridge * np.eye(m), x) if m else np.zeros((0, n_items))
    pad_cols = size - m
    known = x.sum(axis=0) > 0

    def table(rows: np.ndarray) -> np.ndarray:
        """[n_items, m] → [n_items + 1, size]: padding row 0 and zero trailing columns."""
        out = np.zeros((n_items + 1, size))
        out[1:, :m] = rows
        return out

    item_rows = table(np.where(known[:, None], alpha.T, 0.0))
    cov = item_covariance(item_rows[1:][known]) if known.any() else np.zeros((size, size))
    valid = np.concatenate([np.ones(m), np.zeros(pad_cols)])
    return KernelBranch(
        anchors=table(x.T).astype(np.float32),
        anchor_sq=np.concatenate([x.sum(axis=1), np.zeros(pad_cols)]).astype(np.float32),
        anchor_valid=valid.astype(np.float32),
        item_rows=item_rows.astype(np.float32),
        item_cov=cov,
    )
