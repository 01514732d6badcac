"""The towers' closed-form kernel branch: ∞-AE, kernel ridge regression over users.

∞-AE (Sachdeva et al., "Infinite Recommendation Networks", WSDM 2022) is an autoencoder
of infinite width: kernel ridge regression from a user's 0/1 history row ``x`` to the
same row, with the neural tangent kernel (NTK) of a fully connected ReLU network. Over
``m`` *anchor* users with rows ``X`` [m, n_items]:

    α = (K + reg · tr(K)/m · I)⁻¹ · X          [m, n_items], K = NTK(X, X)
    s(u) = NTK(x_u, X) · α                      [n_items]

That is an inner product of m-vectors, so an inner-product index serves it exactly: a
two-tower whose user side is the kernel against the anchors. Which m-vectors: with
``A = K + reg · tr(K)/m · I``, ``s(u)_j = (k_u · A⁻¹) · x_j`` where ``x_j`` = ``X[:, j]`` is
item j's 0/1 column (which anchors have it). The served item vector is that column, the
user vector the *dual coefficients* ``k_u · A⁻¹``. The plain split ``k_u · α[:, j]`` scores
the same but does not index: IVF-PQ over the spiky ``α`` columns measured recall@10 0.45
at nprobe 8 of 41 and needed a ×64 re-rank at every list, against 0.87 and ×16 for the 0/1
columns (ML-100K, P1). A fresh event changes ``x_u`` and so ``k_u``: the user tower
recomputes it from the history.

The NTK of a depth-``L`` ReLU network (NTK parameterisation, ``σ_w² = 2``,
``σ_b² = 0.01``; inputs of dimension ``d`` = the number of items, plus the profiles'
widths below) by the usual recursion,
with ``Σ`` the NNGP kernel and ``Θ`` the NTK:

    Σ⁰(x, y) = σ_w² x·y / d + σ_b²,  Θ⁰ = Σ⁰
    θ = arccos(Σˡ(x, y) / √(Σˡ(x, x) Σˡ(y, y)))
    Σˡ⁺¹ = σ_w² √(Σˡ(x, x) Σˡ(y, y)) (sin θ + (π − θ) cos θ) / 2π + σ_b²
    Θˡ⁺¹ = Σˡ⁺¹ + Θˡ · σ_w² (π − θ) / 2π

and Σˡ⁺¹(x, x) = σ_w² Σˡ(x, x) / 2 + σ_b² on the diagonal (θ = 0). ``ntk`` below is the
numpy form; ``training.model.UserTower`` computes the same in TensorFlow.

The input may also carry the user's *feature profiles* (``kernel_item_features``): for a
multi-valued or categorical item feature such as genres, the share of the user's items
with each value, times ``kernel_feature_scale``. Two users with few items in common but
the same tastes then still look alike. The input is ``[x_u, scale · p_u]`` and ``d`` grows
by the features' vocabulary sizes.

Cost: O(m² · n_items + m³) to fit and m floats per served vector, so ``m`` is capped
(``kernel_max_users``; a seeded sample of the training users above it). On ML-100K's P1
split it beats EASE by +2 % Recall@10 alone (docs/quality.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from training.features import FittedFeature
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


def profile_tables(
    features: Sequence[FittedFeature],
    feature_table: Mapping[str, np.ndarray],
    names: Sequence[str],
) -> list[np.ndarray]:
    """For each fitted item feature named in ``names`` (in feature order): an
    [n_items, size] float32 0/1 table, item × value (index 0, "missing", never set)."""
    tables = []
    for feature in features:
        if feature.name not in names:
            continue
        block = np.asarray(feature_table[feature.name], dtype=np.int64)  # [n_items, width]
        table = np.zeros((len(block), feature.size), dtype=np.float32)
        rows = np.repeat(np.arange(len(block)), block.shape[1])
        table[rows, block.ravel()] = 1.0
        table[:, 0] = 0.0
        tables.append(table)
    return tables


def user_profiles(x: np.ndarray, tables: Sequence[np.ndarray], scale: float) -> np.ndarray:
    """[n, Σ sizes] float64: per table, the share of each row of ``x`` [n, n_items] (0/1)
    whose items have each value, times ``scale``; zeros where no item has any value."""
    blocks = [np.zeros((len(x), 0))]
    for table in tables:
        counts = x @ table.astype(np.float64)
        totals = counts.sum(axis=1, keepdims=True)
        blocks.append(scale * counts / np.where(totals > 0, totals, 1.0))
    return np.concatenate(blocks, axis=1)


@dataclass(frozen=True)
class KernelBranch:
    """Fitted tables, in item vocabulary order with row 0 for unknown/padding (all zero);
    ``m`` columns, one per anchor user (trailing columns all zero when fewer users than
    the towers were built for: they score nothing).

    ``anchors``: [n_items + 1, m] float32 0/1, ``X``ᵀ: which anchors have each item. It is
    also the item tower's table: item j's served part is its row ``x_j``.
    ``anchor_sq``: [m] float64, each anchor's squared input norm (items + profile).
    ``anchor_profiles``: [P, m] float64, the anchors' feature profiles (P may be 0).
    ``anchor_valid``: [m] float32, 1 for a real anchor, 0 for padding.
    ``user_map``: [m, m] float64 ``A⁻¹``: a user's kernel row times it is the user's part.
    ``item_cov``: [m, m] float64 covariance of the known items' rows (z-scoring).
    """

    anchors: np.ndarray
    anchor_sq: np.ndarray
    anchor_profiles: np.ndarray
    anchor_valid: np.ndarray
    user_map: np.ndarray
    item_cov: np.ndarray

    @property
    def item_rows(self) -> np.ndarray:
        """[n_items + 1, m] the item tower's table: the anchors' 0/1 columns."""
        return self.anchors

    @property
    def size(self) -> int:
        return int(self.item_rows.shape[1])


def anchor_count(max_users: int, n_users: int, n_items: int, max_items: int) -> int:
    """Columns of the kernel branch for ``n_users`` users and ``n_items`` items: 0 (off)
    above ``max_items`` items, whose [n_items, m] anchor table would not fit."""
    if n_items > max_items:
        return 0
    return min(max_users, n_users)


def fit_kernel_branch(
    interactions: pd.DataFrame,
    item_ids: Sequence[str],
    size: int,
    depth: int,
    reg: float,
    seed: int,
    tables: Sequence[np.ndarray] = (),
    scale: float = 1.0,
) -> KernelBranch:
    """Fit ∞-AE on ``interactions`` for the vocabulary ``item_ids`` with ``size`` columns.

    Anchors: every user of ``interactions``, or a ``seed``-ed sample of ``size`` of them
    when there are more. ``reg`` > 0 is the ridge, relative to K's mean diagonal.
    ``tables`` (``profile_tables``) and ``scale``: the feature profiles in the input.
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
    profiles = user_profiles(x, tables, scale)
    inputs = np.concatenate([x, profiles], axis=1)
    k = ntk(inputs, inputs, depth)
    ridge = reg * np.trace(k) / max(m, 1)
    user_map = np.zeros((size, size))
    user_map[:m, :m] = np.linalg.inv(k + ridge * np.eye(m)) if m else 0.0
    pad_cols = size - m
    known = x.sum(axis=0) > 0
    anchors = np.zeros((n_items + 1, size))  # row 0: padding; trailing columns: none
    anchors[1:, :m] = x.T
    cov = item_covariance(anchors[1:][known]) if known.any() else np.zeros((size, size))
    anchor_profiles = np.zeros((profiles.shape[1], size))
    anchor_profiles[:, :m] = profiles.T
    squares = (inputs * inputs).sum(axis=1)
    return KernelBranch(
        anchors=anchors.astype(np.float32),
        anchor_sq=np.concatenate([squares, np.zeros(pad_cols)]),
        anchor_profiles=anchor_profiles,
        anchor_valid=np.concatenate([np.ones(m), np.zeros(pad_cols)]).astype(np.float32),
        user_map=user_map,
        item_cov=cov,
    )
